//! Which stages a build runs, decided before any step: the target stage (`--target`, else the last)
//! and every stage it reaches through `FROM <stage>` and `COPY --from=<stage>`, as BuildKit does — a
//! stage nothing needs is skipped, and a `--target` naming no stage fails before anything runs.

use crate::build::dockerfile::{Dockerfile, Instruction};
use crate::build::words::expand;
use std::collections::HashMap;

/// One stage as far as planning sees it.
struct StagePlan {
    alias: Option<String>,
    /// Stages it uses; `None` when a reference could not be resolved without running the build (it
    /// names a variable only the stage sets): then every earlier stage counts as used.
    uses: Option<Vec<usize>>,
}

/// Stage names compare as docker compares them: case-insensitively.
fn find(stages: &[StagePlan], name: &str) -> Option<usize> {
    if let Some(i) =
        stages.iter().position(|s| s.alias.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(name)))
    {
        return Some(i);
    }
    name.parse::<usize>().ok().filter(|i| *i < stages.len())
}

/// For each stage (in order), whether the build needs it.
pub(super) fn needed_stages(
    df: &Dockerfile,
    global: &HashMap<String, String>,
    target: Option<&str>,
) -> Result<Vec<bool>, String> {
    let mut stages: Vec<StagePlan> = Vec::new();
    for step in &df.steps {
        match &step.instruction {
            Instruction::From { image, alias, .. } => {
                let uses = match expand(image, global, df.escape) {
                    Ok(name) => Some(find(&stages, &name).into_iter().collect()),
                    Err(_) => None,
                };
                stages.push(StagePlan { alias: alias.clone(), uses });
            }
            Instruction::Copy { from: Some(from), .. } => {
                // Some(Some(i)): stage i; Some(None): an image; None: unknown until the build runs.
                let resolved = expand(from, global, df.escape)
                    .ok()
                    .filter(|n| !n.contains('$'))
                    .map(|n| find(&stages, &n));
                let Some(cur) = stages.last_mut() else { continue };
                match (resolved, &mut cur.uses) {
                    (Some(Some(i)), Some(u)) => u.push(i),
                    (None, u) => *u = None,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if stages.is_empty() {
        return Ok(Vec::new());
    }
    let start = match target {
        Some(t) => find(&stages, t)
            .filter(|i| stages[*i].alias.is_some() || t.parse::<usize>().is_ok())
            .ok_or_else(|| format!("target stage \"{t}\" could not be found"))?,
        None => stages.len() - 1,
    };
    let mut needed = vec![false; stages.len()];
    let mut todo = vec![start];
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut needed[i], true) {
            continue;
        }
        match &stages[i].uses {
            Some(u) => todo.extend(u.iter().copied().filter(|j| *j < i)),
            None => todo.extend(0..i),
        }
    }
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str, target: Option<&str>) -> Result<Vec<bool>, String> {
        needed_stages(&Dockerfile::parse(text).unwrap(), &HashMap::new(), target)
    }

    #[test]
    fn only_what_the_target_reaches() {
        let df = "FROM busybox AS a\nRUN x\nFROM busybox AS b\nRUN y\nFROM a AS c\nCOPY --from=1 /f /f\nFROM busybox AS d\n";
        assert_eq!(plan(df, None).unwrap(), [false, false, false, true]);
        assert_eq!(plan(df, Some("c")).unwrap(), [true, true, true, false]);
        assert_eq!(plan(df, Some("B")).unwrap(), [false, true, false, false]);
        assert_eq!(plan(df, Some("nope")).unwrap_err(), "target stage \"nope\" could not be found");
        // An image named in --from is not a stage.
        assert_eq!(
            plan("FROM busybox AS a\nFROM busybox\nCOPY --from=alpine /f /f\n", None).unwrap(),
            [false, true]
        );
    }
}
