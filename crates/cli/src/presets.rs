//! The `engram reproduce` presets, read from `presets.toml` (embedded in the binary): each a list
//! of jobs, each job an `engram run` command line and the published figures it is compared with.

use crate::run::parse_run_flags;
use anyhow::{anyhow, Context, Result};
use clap::builder::{PossibleValue, PossibleValuesParser};
use engram_cl::config::RunConfig;
use engram_cl::scenario::ScenarioSpec;
use serde::Deserialize;
use std::sync::OnceLock;

/// The presets' source.
static PRESETS_TOML: &str = include_str!("presets.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresetFile {
    preset: Vec<Preset>,
}

/// A published protocol.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Preset {
    /// The name `engram reproduce` takes.
    pub name: String,
    /// What it is, for `--help`.
    pub about: String,
    /// Report BWT in GEM's convention and FWT for every job.
    #[serde(default)]
    pub gem_metrics: bool,
    /// Its configurations.
    pub job: Vec<Job>,
}

/// One configuration of a preset.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The name in the summary.
    pub label: String,
    /// `engram run`'s flags, space-separated.
    pub run: String,
    /// The figures it is compared with.
    #[serde(default)]
    pub published: Vec<Published>,
}

/// A published figure.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    /// A key of the run's JSON (`acc`, `bwt`, `fwt`, `acc_train`, `task_a`, `task_b`).
    pub metric: String,
    /// The figure, as a fraction.
    pub value: f64,
    /// Where it comes from.
    pub note: String,
}

/// Every preset (the embedded file is checked by the tests; a broken one stops the binary here).
pub fn presets() -> &'static [Preset] {
    static PARSED: OnceLock<Vec<Preset>> = OnceLock::new();
    PARSED.get_or_init(|| {
        let file: PresetFile = toml::from_str(PRESETS_TOML).expect("presets.toml is valid (checked by the tests)");
        file.preset
    })
}

/// The preset called `name`.
pub fn find(name: &str) -> Option<&'static Preset> {
    presets().iter().find(|p| p.name == name)
}

/// The preset names with their descriptions, for clap (`engram reproduce --help`).
pub fn parser() -> PossibleValuesParser {
    PossibleValuesParser::new(presets().iter().map(|p| PossibleValue::new(p.name.as_str()).help(p.about.as_str())))
}

impl Job {
    /// The job's scenario and configuration for `seed` (with `--eval-train` when asked).
    pub fn resolve(&self, seed: u64, eval_train: bool) -> Result<(ScenarioSpec, RunConfig)> {
        let mut argv: Vec<String> = self.run.split_whitespace().map(String::from).collect();
        argv.extend(["--seed".into(), seed.to_string()]);
        if eval_train {
            argv.push("--eval-train".into());
        }
        let args = parse_run_flags(&argv)
            .map_err(|e| anyhow!("preset job {:?}: {}", self.label, e.render().to_string().trim_end()))?;
        args.resolve().with_context(|| format!("preset job {:?}", self.label))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engram_cl::config::InitChoice;
    use engram_cl::methods::importance::FisherKind;
    use engram_cl::methods::Method;

    /// The embedded file parses, names are unique, and every job's flags resolve.
    #[test]
    fn every_preset_job_resolves() {
        let mut names: Vec<&str> = presets().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), 9);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 9, "preset names are unique");
        for p in presets() {
            assert!(!p.job.is_empty(), "{}", p.name);
            for j in &p.job {
                j.resolve(0, false).unwrap_or_else(|e| panic!("{} / {}: {e:#}", p.name, j.label));
                for f in &j.published {
                    assert!(f.value.is_finite() && !f.note.is_empty(), "{} / {}", p.name, j.label);
                }
            }
        }
    }

    /// The GEM presets use the official code's initialisation, EWC its batch-mean "Fisher";
    /// the SI paper's presets Keras's Glorot-uniform (its official code), the EWC tutorial's
    /// PyTorch's default; the tuned even-odd SI row its settings.
    #[test]
    fn presets_match_the_official_code() {
        let cfgs = |name: &str| -> Vec<(String, RunConfig)> {
            find(name).unwrap().job.iter().map(|j| (j.label.clone(), j.resolve(0, false).unwrap().1)).collect()
        };
        for name in ["gem-rotated-mnist", "gem-permuted-mnist"] {
            for (label, c) in cfgs(name) {
                assert_eq!(c.init, InitChoice::XavierUniform, "{label}");
                assert_eq!((c.hidden, c.layers, c.batch, c.epochs), (100, 2, 10, 1), "{label}");
                if c.method == Method::Ewc {
                    assert_eq!(c.fisher, FisherKind::BatchMean);
                }
            }
        }
        for name in ["si-split-mnist", "si-permuted-mnist"] {
            for (label, c) in cfgs(name) {
                assert_eq!(c.init, InitChoice::XavierUniform, "{label}");
            }
        }
        for (label, c) in cfgs("ewc-even-odd") {
            let want = if label.ends_with("b256 he") {
                assert_eq!((c.strength, c.batch, c.optimizer.lr()), (7.0, 256, 1e-4), "{label}");
                InitChoice::HeUniform
            } else {
                InitChoice::KaimingUniform
            };
            assert_eq!(c.init, want, "{label}");
        }
        let (spec, c) = find("gem-rotated10").unwrap().job[0].resolve(3, true).unwrap();
        assert_eq!((spec.tasks, spec.seed, c.seed, c.eval_train), (10, 3, 3, true));
        assert_eq!((c.hidden, c.layers, c.memories, c.memory_strength), (250, 6, 512, 0.9));
    }
}
