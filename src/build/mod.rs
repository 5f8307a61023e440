//! `rimg build`: Dockerfiles become images. Parsing lives in [`dockerfile`] and [`words`]; executing steps
//! on the FUSE rootfs and turning each step's upper directory into a layer is the builder's job.

pub mod builder;
pub mod commit;
pub mod config;
pub mod context;
pub mod dockerfile;
pub mod image;
pub mod rootfs;
pub mod words;
