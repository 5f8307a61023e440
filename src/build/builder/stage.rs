//! Stages and build arguments: `FROM` starts a stage on scratch, an earlier stage or an image; `ARG`
//! declares what a stage may see of `--build-arg`, the global ARGs and the predefined platform ARGs.

use super::cache::{image_key, scratch_key};
use super::{BaseResolver, Builder, Stage, StepError};
use crate::build::dockerfile::Dockerfile;
use crate::build::image::NewImage;
use crate::build::words::expand;
use std::collections::HashMap;

impl Builder<'_> {
    /// `FROM`: a new stage on scratch, on a stage built before (named by its alias), or on an image
    /// (pulled if missing). Only global ARGs are visible in the line, as in docker.
    pub(super) fn start_stage(
        &mut self,
        image: &str,
        alias: Option<&str>,
        platform: Option<&str>,
        resolve_base: &BaseResolver<'_>,
    ) -> Result<(), StepError> {
        let name = expand(image, &self.global, self.escape).map_err(|e| e.to_string())?;
        let (image, key) = if name == "scratch" {
            (NewImage::scratch(), scratch_key())
        } else if let Some(s) = self.stage_named(&name) {
            (s.image.clone(), s.key.clone())
        } else {
            self.base_image(&name, platform, resolve_base)?
        };
        let cache = super::cache_from::start(&self.sources, &image);
        self.stages.push(Stage { name: alias.map(str::to_string), image, args: HashMap::new(), key, cache });
        Ok(())
    }

    /// The stage called `name`, if one was built before.
    pub(super) fn stage_named(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_deref() == Some(name))
    }

    /// An image as a stage's base, with its cache key. `--platform` may use the global ARGs and
    /// `BUILDPLATFORM`/`TARGETPLATFORM`.
    fn base_image(
        &self,
        name: &str,
        platform: Option<&str>,
        resolve_base: &BaseResolver<'_>,
    ) -> Result<(NewImage, String), StepError> {
        let mut vars = self.global.clone();
        for k in ["BUILDPLATFORM", "TARGETPLATFORM"] {
            vars.entry(k.to_string()).or_insert_with(|| predefined_arg(k).unwrap_or_default());
        }
        let platform = match platform {
            Some(p) => Some(expand(p, &vars, self.escape).map_err(|e| e.to_string())?),
            None => None,
        };
        let rec = resolve_base(name, platform.as_deref())?;
        Ok((NewImage::from_image(self.store, &rec)?, image_key(&rec.manifest_digest)))
    }

    /// `ARG`: each name gets, in order of precedence, its `--build-arg`, its default (expanded), the
    /// global ARG of that name, or the predefined value; a name with none of these stays unset.
    pub(super) fn declare_args(&mut self, list: &[(String, Option<String>)]) -> Result<(), StepError> {
        for (k, default) in list {
            let v = match self.opts.build_args.get(k) {
                Some(v) => Some(v.clone()),
                None => match default {
                    Some(d) => Some(self.x(d)?),
                    None => self.global.get(k).cloned(),
                },
            };
            if let Some(v) = v.or_else(|| predefined_arg(k)) {
                self.current_mut()?.args.insert(k.clone(), v);
            }
        }
        Ok(())
    }
}

/// The ARGs declared before the first FROM, with their `--build-arg` or default values (each default
/// may use the ones before it). Only these are visible in FROM lines.
pub(super) fn global_args(df: &Dockerfile, build_args: &HashMap<String, String>) -> HashMap<String, String> {
    let mut global: HashMap<String, String> = HashMap::new();
    for (k, v) in &df.global_args {
        if let Some(v) = build_args.get(k).cloned().or_else(|| v.clone()) {
            let v = expand(&v, &global, df.escape).unwrap_or(v);
            global.insert(k.clone(), v);
        }
    }
    global
}

/// BuildKit's predefined platform ARGs; rimg builds for the host, so build and target are the same.
pub(super) fn predefined_arg(k: &str) -> Option<String> {
    let p = crate::registry::Platform::host();
    Some(match k {
        "TARGETOS" | "BUILDOS" => p.os,
        "TARGETARCH" | "BUILDARCH" => p.architecture,
        "TARGETPLATFORM" | "BUILDPLATFORM" => format!("{}/{}", p.os, p.architecture),
        "TARGETVARIANT" | "BUILDVARIANT" => p.variant.unwrap_or_default(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_args_take_build_args_first_and_expand_defaults() {
        let df = Dockerfile::parse("ARG A=1\nARG B=${A}x\nARG C\nARG D\nFROM scratch\n").unwrap();
        let given = HashMap::from([("A".to_string(), "9".to_string()), ("C".to_string(), "c".to_string())]);
        let global = global_args(&df, &given);
        assert_eq!(global.get("A").map(String::as_str), Some("9"));
        assert_eq!(global.get("B").map(String::as_str), Some("9x"));
        assert_eq!(global.get("C").map(String::as_str), Some("c"));
        assert_eq!(global.get("D"), None, "an ARG without value or default stays unset");
    }

    #[test]
    fn predefined_platform_args() {
        let p = crate::registry::Platform::host();
        assert_eq!(predefined_arg("TARGETARCH"), Some(p.architecture.clone()));
        assert_eq!(predefined_arg("BUILDPLATFORM"), Some(format!("{}/{}", p.os, p.architecture)));
        assert_eq!(predefined_arg("HOME"), None);
    }
}
