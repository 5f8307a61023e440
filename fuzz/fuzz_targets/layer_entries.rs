//! Structured hostile layers: tars built from fuzzer-chosen entries whose names and link targets are
//! assembled from `..`, absolute paths into the sentinel tree, symlinks, hard links, whiteouts and
//! xattrs, optionally on top of a lower layer. Nothing outside the layer directory may change.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rimg_fuzz::checks::{layer_entries, Entry, Kind};

#[derive(Arbitrary, Debug)]
enum AKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    CharNull,
    Fifo,
}

/// Path pieces, joined with `/`. `Root` gives an empty component (a leading or doubled `/`).
#[derive(Arbitrary, Debug)]
enum Piece {
    Root,
    Dot,
    DotDot,
    Sentinel,
    Outside,
    D,
    Dest,
    Lower,
    Dir,
    Link,
    Victim,
    A,
    B,
    Whiteout,
    WhiteoutA,
    Opaque,
    AufsMeta,
    Etc,
}

impl Piece {
    fn text(&self) -> &'static str {
        match self {
            Piece::Root => "",
            Piece::Dot => ".",
            Piece::DotDot => "..",
            Piece::Sentinel => "{S}",
            Piece::Outside => "outside",
            Piece::D => "d",
            Piece::Dest => "dest",
            Piece::Lower => "lower",
            Piece::Dir => "dir",
            Piece::Link => "link",
            Piece::Victim => "victim",
            Piece::A => "a",
            Piece::B => "b",
            Piece::Whiteout => ".wh.victim",
            Piece::WhiteoutA => ".wh.a",
            Piece::Opaque => ".wh..wh..opq",
            Piece::AufsMeta => ".wh..wh.plnk",
            Piece::Etc => "etc",
        }
    }
}

fn join(pieces: &[Piece]) -> String {
    pieces.iter().take(12).map(Piece::text).collect::<Vec<_>>().join("/")
}

#[derive(Arbitrary, Debug)]
enum XName {
    User,
    Opaque,
    UserOpaque,
    Redirect,
    Capability,
    Trusted,
    Empty,
    Other(String),
}

impl XName {
    fn name(&self) -> String {
        match self {
            XName::User => "user.x".into(),
            XName::Opaque => "trusted.overlay.opaque".into(),
            XName::UserOpaque => "user.overlay.opaque".into(),
            XName::Redirect => "trusted.overlay.redirect".into(),
            XName::Capability => "security.capability".into(),
            XName::Trusted => "trusted.rimg".into(),
            XName::Empty => String::new(),
            XName::Other(s) => s.chars().take(300).collect(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct AEntry {
    kind: AKind,
    name: Vec<Piece>,
    target: Vec<Piece>,
    data: Vec<u8>,
    mode: u16,
    pax: bool,
    xattrs: Vec<(XName, Vec<u8>)>,
}

impl AEntry {
    fn entry(&self) -> Entry {
        Entry {
            kind: match self.kind {
                AKind::File => Kind::File,
                AKind::Dir => Kind::Dir,
                AKind::Symlink => Kind::Symlink,
                AKind::Hardlink => Kind::Hardlink,
                AKind::CharNull => Kind::CharNull,
                AKind::Fifo => Kind::Fifo,
            },
            name: join(&self.name),
            target: join(&self.target),
            data: self.data.iter().copied().take(256).collect(),
            mode: u32::from(self.mode),
            pax: self.pax,
            xattrs: self
                .xattrs
                .iter()
                .take(4)
                .map(|(k, v)| (k.name(), v.iter().copied().take(64).collect()))
                .collect(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Layers {
    lower: Vec<AEntry>,
    upper: Vec<AEntry>,
}

fuzz_target!(|l: Layers| {
    let lower: Vec<Entry> = l.lower.iter().take(16).map(AEntry::entry).collect();
    let upper: Vec<Entry> = l.upper.iter().take(24).map(AEntry::entry).collect();
    if std::env::var_os("RIMG_FUZZ_PRINT").is_some() {
        // For turning a crash into a regression test: `RIMG_FUZZ_PRINT=1 cargo fuzz run layer_entries CRASH`.
        eprintln!("lower = {lower:#?}\nupper = {upper:#?}");
    }
    layer_entries(&lower, &upper);
});
