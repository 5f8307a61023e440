//! `--help` as docker users expect it: every command shows a few examples, and the global options
//! (`--root`, `--config`, ...) are listed once, in `rimg --help`, not in every subcommand's list (they
//! are still accepted anywhere on the line).

use clap::Command;

/// Examples of the commands whose `Args` do not carry their own (`after_help`), by command path.
const EXAMPLES: &[(&str, &str)] = &[
    ("pull", "rimg pull alpine\n  rimg pull -q --platform linux/arm64 busybox:1.36\n  rimg pull localhost:5000/app@sha256:…"),
    ("inspect", "rimg inspect alpine\n  rimg inspect -f '{{.Id}} {{json .Config.Cmd}}' alpine"),
    ("image inspect", "rimg image inspect -f '{{.Size}}' alpine"),
    ("tag", "rimg tag alpine localhost:5000/alpine:3.20"),
    ("rmi", "rimg rmi alpine\n  rimg rmi -f 3f57d9401f8d"),
    ("image rm", "rimg image rm alpine"),
    ("image prune", "rimg image prune -f\n  rimg image prune -a -f"),
    ("save", "rimg save -o alpine.tar alpine\n  rimg save alpine busybox | gzip > images.tar.gz"),
    ("load", "rimg load -i alpine.tar\n  gunzip -c images.tar.gz | rimg load"),
    ("push", "rimg push localhost:5000/app:1.0\n  rimg push app:1.0 localhost:5000/team/app:1.0"),
    ("unpack", "rimg unpack alpine /tmp/alpine-rootfs"),
    ("export", "rimg export -o web.tar web\n  rimg export alpine > alpine-rootfs.tar"),
    ("login", "rimg login -u alice localhost:5000\n  echo \"$TOKEN\" | rimg login -u alice --password-stdin registry.example.com"),
    ("logout", "rimg logout localhost:5000"),
    ("mount", "rimg mount alpine /mnt/alpine\n  rimg mount --read-only alpine /mnt/ro"),
    ("umount", "rimg umount /mnt/alpine"),
    ("overlayfs", "rimg overlayfs -o lowerdir=/l2:/l1,upperdir=/u,workdir=/w /merged"),
    ("run", "rimg run --rm -it alpine sh\n  rimg run -d --name web -v data:/srv busybox httpd -f\n  \
             rimg run --rm -m 64m --cpus 0.5 alpine echo hi"),
    ("stop", "rimg stop web\n  rimg stop -t 2 web db"),
    ("kill", "rimg kill web\n  rimg kill -s HUP web"),
    ("rm", "rimg rm web\n  rimg rm -f -v web"),
    ("logs", "rimg logs web\n  rimg logs -f -t web"),
    ("exec", "rimg exec web ls /\n  rimg exec -it -u nobody web sh"),
    ("wait", "rimg wait web"),
    ("commit", "rimg commit web web:snapshot\n  rimg commit -m 'add config' -p=false web app:2"),
    ("container prune", "rimg container prune -f"),
    ("container ls", "rimg container ls -a"),
    ("system info", "rimg system info"),
];

/// Apply the examples, and give every subcommand hidden copies of the global options (clap then does not
/// add the listed ones it propagates, and values still flow between the levels by id). Runs before
/// clap builds the command: a built command must not be changed.
pub fn adjust(cmd: &mut Command) {
    let globals: Vec<clap::Arg> =
        cmd.get_arguments().filter(|a| a.is_global_set()).map(|a| a.clone().hide(true)).collect();
    for sub in cmd.get_subcommands_mut() {
        adjust_sub(sub, "", &globals);
    }
}

fn adjust_sub(cmd: &mut Command, parent: &str, globals: &[clap::Arg]) {
    let path =
        if parent.is_empty() { cmd.get_name().to_string() } else { format!("{parent} {}", cmd.get_name()) };
    let mut c = std::mem::take(cmd);
    for g in globals {
        c = c.arg(g.clone());
    }
    if c.get_after_help().is_none() {
        if let Some((_, ex)) = EXAMPLES.iter().find(|(p, _)| *p == path) {
            c = c.after_help(format!("Examples:\n  {ex}"));
        }
    }
    *cmd = c;
    for sub in cmd.get_subcommands_mut() {
        adjust_sub(sub, &path, globals);
    }
}
