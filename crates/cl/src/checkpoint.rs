//! A run's state as a checkpoint (crate `engram-ckpt`): which tensor holds what, and the
//! manifest's `run` object. Decoding checks every piece against the scenario and config it is
//! resumed with, so a checkpoint that does not fit is refused, never half-loaded. The state comes
//! down from the backend to be written (a checkpoint is the host's copy) and goes back up on
//! resume; a method writes and reads its own tensors ([`Strategy::save`], [`Strategy::load`]).
//!
//! Tensors (all little-endian, row-major; `P` = number of parameters):
//!
//! | name | dtype | shape | what |
//! |---|---|---|---|
//! | `model.theta` | F32 | `[P]` | the parameters: layer by layer, `W` (`in x out`, row-major) then `b` |
//! | `optimizer.m`, `optimizer.v` | F32 | `[P]` | Adam's moments (Adam only) |
//! | `penalty.big_omega` | F32 | `[P]` | `Omega` (L2, EWC, MAS, SI) |
//! | `penalty.theta_star` | F32 | `[P]` | the anchor `theta*` |
//! | `penalty.omega` | F32 | `[P]` | SI's running path integral `omega` of the task in progress |
//! | `si.prev_delta`, `si.theta_init` | F32 | `[P]` | the `prev-step` / `from-init` SI variants' extra state |
//! | `episodic.x` | F32 | `[rows, dim]` | GEM / A-GEM: finished tasks' memories |
//! | `episodic.y`, `episodic.row_task` | U32 | `[rows]` | their labels and tasks |
//! | `episodic.current` | U32 | `[k]` | positions buffered for the task in progress |
//! | `agem.perm` | U32 | `[rows]` | A-GEM's index vector |
//! | `progress.order` | U32 | `[n, 2]` | mid-task: the epoch's `(task, position)` sample order |

use crate::config::{layer_sizes, RunConfig};
use crate::methods::episodic::{memory_rows, EpisodicRecord};
use crate::methods::{self, Carried, StateAndMethod, Strategy};
use crate::saved::{self, u32s};
use crate::scenario::{phase_samples, phases, Scenario, ScenarioSpec};
use crate::state::{Profile, Progress, Run, RunBackend, RunError, RunState};
use engram_ckpt::{Checkpoint, Data, Tensor};
use engram_nn::Mlp;
use engram_si::OptimizerState;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The `kind` of the manifest's `run` object.
pub const RUN_KIND: &str = "engram-run";

/// A random stream's exact position: ChaCha8's seed, stream and word position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RngState {
    /// The 32-byte seed, hex.
    pub seed: String,
    /// The stream number.
    pub stream: u64,
    /// The word position (a 68-bit number, as a decimal string).
    pub word_pos: String,
}

impl RngState {
    /// The state of `rng`.
    pub fn of(rng: &ChaCha8Rng) -> Self {
        Self { seed: hex_encode(&rng.get_seed()), stream: rng.get_stream(), word_pos: rng.get_word_pos().to_string() }
    }

    /// The generator at this state.
    pub fn rng(&self) -> Result<ChaCha8Rng, String> {
        use rand::SeedableRng;
        let bytes = hex_decode(&self.seed).filter(|b| b.len() == 32).ok_or("a random seed is not 64 hex digits")?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes);
        let pos: u128 = self.word_pos.parse().map_err(|_| format!("bad word position {:?}", self.word_pos))?;
        if pos >> 68 != 0 {
            return Err(format!("word position {pos} is beyond ChaCha's 68 bits"));
        }
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(pos);
        Ok(rng)
    }
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// The manifest's `run` object.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRecord {
    kind: String,
    scenario: ScenarioSpec,
    config: RunConfig,
    layer_sizes: Vec<usize>,
    num_params: usize,
    task_names: Vec<String>,
    at_task_boundary: bool,
    progress: Progress,
    optimizer_steps: u64,
    rng: BTreeMap<String, RngState>,
    b: Vec<f64>,
    #[serde(rename = "R")]
    r: Vec<Vec<f64>>,
    #[serde(rename = "R_train")]
    r_train: Option<Vec<Vec<f64>>>,
    per_task_seconds: Vec<f64>,
    task_seconds: f64,
    seconds: f64,
    profile: Profile,
    /// GEM / A-GEM: the memory's bookkeeping ([`EpisodicRecord`]).
    episodic: Option<Value>,
    /// What the front end wants back on resume (output paths, checkpoint settings).
    #[serde(default)]
    cli: Value,
}

/// The checkpoint of the run state `st` and its method's `strategy`, a run of `run.cfg` on
/// `run.scenario` (built from `spec`); `cli` is stored as is under `run.cli`.
pub fn encode<B: RunBackend>(
    run: &Run<'_, B>,
    st: &RunState<B>,
    strategy: &dyn Strategy<B>,
    spec: &ScenarioSpec,
    cli: Value,
) -> Result<Checkpoint, RunError> {
    let be = run.be;
    let mut t = BTreeMap::new();
    t.insert("model.theta".to_string(), saved::download_f32(be, &st.theta)?);
    if let Some((m, v)) = &st.optimizer.moments {
        t.insert("optimizer.m".to_string(), saved::download_f32(be, m)?);
        t.insert("optimizer.v".to_string(), saved::download_f32(be, v)?);
    }
    let episodic = strategy.save(run, &mut t)?;
    if st.progress.mid_phase() {
        let flat: Vec<u32> = st.order.iter().flat_map(|&(a, b)| [a, b]).collect();
        t.insert("progress.order".to_string(), Tensor::matrix(st.order.len(), Data::U32(flat)));
    }
    let mut rng = BTreeMap::new();
    rng.insert("shuffle".to_string(), RngState::of(&st.streams.shuffle));
    rng.insert("sample".to_string(), RngState::of(&st.streams.sample));
    rng.insert("memory".to_string(), RngState::of(&st.streams.memory));
    let rec = RunRecord {
        kind: RUN_KIND.into(),
        scenario: spec.clone(),
        config: run.cfg.clone(),
        layer_sizes: layer_sizes(run.scenario, run.cfg),
        num_params: run.model.num_params(),
        task_names: run.scenario.tasks.iter().map(|t| t.name.clone()).collect(),
        at_task_boundary: !st.progress.mid_phase(),
        progress: st.progress,
        optimizer_steps: st.optimizer.t,
        rng,
        b: st.b.clone(),
        r: st.r.clone(),
        r_train: st.r_train.clone(),
        per_task_seconds: st.per_task_seconds.clone(),
        task_seconds: st.task_seconds,
        seconds: st.seconds,
        profile: st.profile.clone(),
        episodic,
        cli,
    };
    Ok(Checkpoint { run: serde_json::to_value(rec).expect("a run record serializes"), tensors: t })
}

fn record(ck: &Checkpoint) -> Result<RunRecord, String> {
    if ck.run.get("kind").and_then(Value::as_str) != Some(RUN_KIND) {
        return Err(format!("not an engram run checkpoint (its run.kind is not {RUN_KIND:?})"));
    }
    let rec: RunRecord =
        serde_json::from_value(ck.run.clone()).map_err(|e| format!("the manifest's run record is invalid: {e}"))?;
    check_record(&rec).map_err(|e| format!("the manifest's run record: {e}"))?;
    Ok(rec)
}

/// Every value of a run record in its range, before anything reads it: the configuration as
/// [`RunConfig::validate`] checks flags; R, its training-set twin and b are accuracies in
/// [0, 1], one row per finished phase and one column per task; times finite and >= 0; the
/// optimizer's step count inside the run's.
fn check_record(rec: &RunRecord) -> Result<(), String> {
    rec.config.validate().map_err(|e| format!("config: {e}"))?;
    rec.scenario.validate().map_err(|e| format!("scenario: {e}"))?;
    let tasks = rec.task_names.len();
    if tasks == 0 {
        return Err("the run has no task".into());
    }
    let accuracy = |what: &str, v: f64| {
        if (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            Err(format!("{what} holds {v}; an accuracy lies in [0, 1]"))
        }
    };
    for (name, r) in [("R", Some(&rec.r)), ("R_train", rec.r_train.as_ref())] {
        let Some(r) = r else { continue };
        if r.len() != rec.progress.phases_done {
            return Err(format!("{name} has {} rows; {} phases are done", r.len(), rec.progress.phases_done));
        }
        for (i, row) in r.iter().enumerate() {
            if row.len() != tasks {
                return Err(format!("row {} of {name} has {} values; the run has {tasks} tasks", i + 1, row.len()));
            }
            row.iter().try_for_each(|&v| accuracy(&format!("row {} of {name}", i + 1), v))?;
        }
    }
    if rec.b.len() != tasks {
        return Err(format!("b has {} values; the run has {tasks} tasks", rec.b.len()));
    }
    rec.b.iter().try_for_each(|&v| accuracy("b", v))?;
    let p = &rec.profile;
    let times = [
        ("seconds", rec.seconds),
        ("task_seconds", rec.task_seconds),
        ("profile.forward", p.forward),
        ("profile.backward", p.backward),
        ("profile.consolidation_step", p.consolidation_step),
        ("profile.importance", p.importance),
        ("profile.evaluation", p.evaluation),
        ("profile.data", p.data),
        ("profile.memory_gradients", p.memory_gradients),
        ("profile.projection", p.projection),
    ];
    for (what, v) in times.into_iter().chain(rec.per_task_seconds.iter().map(|&v| ("per_task_seconds", v))) {
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("{what} is {v}; a time is a finite number of seconds >= 0"));
        }
    }
    if rec.per_task_seconds.len() > tasks {
        return Err(format!("per_task_seconds has {} values for {tasks} tasks", rec.per_task_seconds.len()));
    }
    if rec.optimizer_steps > rec.progress.steps {
        return Err(format!(
            "optimizer_steps is {}, more than the {} training steps the run has done",
            rec.optimizer_steps, rec.progress.steps
        ));
    }
    if p.projected_steps > p.constrained_steps || p.constrained_steps > rec.progress.steps {
        return Err(format!(
            "profile: {} projected of {} constrained steps, {} steps done",
            p.projected_steps, p.constrained_steps, rec.progress.steps
        ));
    }
    Ok(())
}

/// What a checkpoint says about its run: the scenario, the config and the front end's record.
pub fn describe(ck: &Checkpoint) -> Result<(ScenarioSpec, RunConfig, Value), String> {
    let r = record(ck)?;
    Ok((r.scenario, r.config, r.cli))
}

/// The checkpoint's progress.
pub fn progress(ck: &Checkpoint) -> Result<Progress, String> {
    Ok(record(ck)?.progress)
}

fn check_layers(rec: &RunRecord, scenario: &Scenario, cfg: &RunConfig) -> Result<usize, String> {
    let sizes = layer_sizes(scenario, cfg);
    if rec.layer_sizes != sizes {
        return Err(format!("the checkpoint's network has layer sizes {:?}; this run's is {sizes:?}", rec.layer_sizes));
    }
    let n = Mlp::new(&sizes).num_params();
    if rec.num_params != n {
        return Err(format!("the checkpoint records {} parameters; the network has {n}", rec.num_params));
    }
    Ok(n)
}

/// Rebuilds the state of a stopped run (`run`'s scenario and config, as recorded in the
/// checkpoint) on the backend, checking that every piece fits.
pub fn decode<B: RunBackend>(run: &Run<'_, B>, ck: &Checkpoint) -> Result<StateAndMethod<B>, String> {
    let (be, scenario, cfg) = (run.be, run.scenario, run.cfg);
    let rec = record(ck)?;
    if rec.config != *cfg {
        return Err("the checkpoint was written by a run with another configuration".into());
    }
    let n = check_layers(&rec, scenario, cfg)?;
    let names: Vec<&str> = scenario.tasks.iter().map(|t| t.name.as_str()).collect();
    if rec.task_names != names {
        return Err(format!("the checkpoint's tasks are {:?}; this scenario's are {names:?}", rec.task_names));
    }
    let theta = saved::upload_f32(be, ck, "model.theta", n)?;
    let mut optimizer = OptimizerState::new(be, cfg.optimizer, n).map_err(|e| e.to_string())?;
    if optimizer.moments.is_some() {
        optimizer.moments = Some((
            saved::upload_f32(be, ck, "optimizer.m", n)?,
            saved::upload_nonnegative_f32(be, ck, "optimizer.v", n)?,
        ));
    }
    optimizer.t = rec.optimizer_steps;
    let mut strategy = methods::build(run, &theta).map_err(|e| e.to_string())?;
    let p = rec.progress;
    strategy.load(run, ck, rec.episodic.as_ref(), p.phases_done)?;
    let phases = phases(scenario.tasks.len(), strategy.joint());
    let tasks = scenario.tasks.len();
    if p.phases_done > phases.len() || rec.r.len() != p.phases_done {
        return Err(format!("progress: {} phases done, {} rows of R", p.phases_done, rec.r.len()));
    }
    if rec.b.len() != tasks || rec.r.iter().any(|row| row.len() != tasks) {
        return Err(format!("R and b must have {tasks} columns"));
    }
    match &rec.r_train {
        Some(rt) if cfg.eval_train && rt.len() == p.phases_done && rt.iter().all(|row| row.len() == tasks) => {}
        None if !cfg.eval_train => {}
        _ => return Err("the training-set R does not match --eval-train and the progress".into()),
    }
    let order = if p.mid_phase() {
        if p.phases_done >= phases.len() || p.epoch >= cfg.epochs {
            return Err(format!("progress: epoch {} of phase {} is past the end of the run", p.epoch, p.phases_done));
        }
        let expected = phase_samples(scenario, &phases[p.phases_done]);
        if p.step > expected.len().div_ceil(cfg.batch) {
            return Err(format!("progress: step {} is past the end of the epoch", p.step));
        }
        let t = ck.tensor("progress.order").map_err(|e| e.to_string())?;
        let flat = u32s(ck, "progress.order")?;
        if t.shape.len() != 2 || t.shape[1] != 2 || flat.len() != 2 * expected.len() {
            return Err(format!("tensor `progress.order` has shape {:?}; expected [{}, 2]", t.shape, expected.len()));
        }
        let order: Vec<(u32, u32)> = flat.chunks_exact(2).map(|c| (c[0], c[1])).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        let mut want = expected;
        want.sort_unstable();
        if sorted != want {
            return Err("tensor `progress.order` is not an ordering of this task's training samples".into());
        }
        order
    } else {
        if ck.tensors.contains_key("progress.order") {
            return Err("a task-boundary checkpoint holds a sample order".into());
        }
        Vec::new()
    };
    let rng = |k: &str| rec.rng.get(k).ok_or_else(|| format!("the random stream {k:?} is missing"))?.rng();
    let st = RunState {
        grad: be.alloc(n).map_err(|e| e.to_string())?,
        theta,
        optimizer,
        streams: crate::state::Streams { shuffle: rng("shuffle")?, sample: rng("sample")?, memory: rng("memory")? },
        b: rec.b,
        r: rec.r,
        r_train: rec.r_train,
        per_task_seconds: rec.per_task_seconds,
        task_seconds: rec.task_seconds,
        seconds: rec.seconds,
        profile: rec.profile,
        progress: p,
        order,
    };
    Ok((st, strategy))
}

/// What `--init-from` takes from a trained model for a new run of `cfg` on `scenario`, with a
/// line for each thing carried or left.
pub fn carried(ck: &Checkpoint, scenario: &Scenario, cfg: &RunConfig) -> Result<(Carried, Vec<String>), String> {
    let rec = record(ck)?;
    if rec.progress.mid_phase() {
        return Err(format!(
            "it was written in the middle of a task (task {}, epoch {}, step {}); --init-from starts new tasks \
             from a model at the END of a task: use a checkpoint written at a task boundary, or `engram resume` \
             to finish that run",
            rec.progress.phases_done + 1,
            rec.progress.epoch + 1,
            rec.progress.step
        ));
    }
    let n = check_layers(&rec, scenario, cfg)?;
    let theta = saved::f32s(ck, "model.theta", n)?.to_vec();
    saved::finite("model.theta", &theta)?;
    let old = rec.config.method;
    let mut notes = vec![format!(
        "parameters: from the {} model after {} task(s) of {} (seed {})",
        old.name(),
        rec.progress.phases_done,
        rec.scenario.kind.name(),
        rec.config.seed
    )];
    let penalty = if cfg.method.is_quadratic() && old == cfg.method {
        let o = saved::f32s(ck, "penalty.big_omega", n)?.to_vec();
        let s = saved::f32s(ck, "penalty.theta_star", n)?.to_vec();
        saved::finite("penalty.big_omega", &o)?;
        saved::finite("penalty.theta_star", &s)?;
        notes.push(format!("importance: Omega and theta* carried over ({})", old.name()));
        Some((o, s))
    } else {
        if cfg.method.is_quadratic() {
            notes.push(format!(
                "importance: none carried ({} keeps no {} importance), so the first new task has no penalty",
                old.name(),
                cfg.method.name()
            ));
        }
        None
    };
    let memory = match (&rec.episodic, cfg.method.is_episodic() && old == cfg.method) {
        (Some(er), true) => {
            let er: EpisodicRecord = serde_json::from_value(er.clone())
                .map_err(|e| format!("the manifest's episodic record is invalid: {e}"))?;
            let dim = scenario.tasks[0].train.split.dim;
            let rows = memory_rows(ck, &er, dim)?;
            notes.push(format!(
                "episodic memory: {} rows of {} finished task(s) carried over",
                rows.y.len(),
                rows.blocks.len()
            ));
            Some(rows)
        }
        _ => None,
    };
    notes.push("optimizer, random streams and b (the untrained network's accuracy): new, from this run's seed".into());
    Ok((Carried { theta, penalty, memory }, notes))
}
