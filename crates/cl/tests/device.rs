//! Whole runs on the GPU against the CPU, on the real MNIST (with `--features cuda`, a GPU and
//! ENGRAM_DATA; elsewhere each test passes after one skip line):
//! * split-mnist SI with the paper's protocol (what `engram run --scenario split-mnist --method
//!   si` runs): the GPU's ACC within 0.3 points of the CPU's, and a second GPU run bit-identical;
//! * every method on a short protocol: the GPU's ACC within 2 points of the CPU's;
//! * a checkpoint written on the GPU resumes on the CPU, and one written on the CPU resumes on
//!   the GPU: the rows evaluated before the checkpoint are carried bit for bit, and the finished
//!   run is within 0.3 points of the uninterrupted one.
//!
//! The GPU check script (scripts/gpu-check.sh) runs them with `--nocapture`: they print the
//! ACC and wall time of each device.

#[cfg(feature = "cuda")]
mod gpu {
    use engram_ckpt::Checkpoint;
    use engram_cl::config::RunConfig;
    use engram_cl::methods::importance::FisherKind;
    use engram_cl::methods::{EwcMode, Method, SiGrad, SiRelu};
    use engram_cl::protocol::{resolve, Overrides};
    use engram_cl::run::{run_with, Checkpointing, RunResult, Start};
    use engram_cl::scenario::{build, Scenario, ScenarioKind, ScenarioSpec};
    use engram_cl::state::RunBackend;
    use engram_mnist::{Mnist, Verify};
    use engram_nn::Cpu;
    use engram_tape::cuda::Cuda;
    use engram_tape::test_device::{gpu, skip};

    /// The GPU and the real MNIST scenario `spec`, or `None` after a skip line.
    fn setup(spec: &ScenarioSpec) -> Option<(Cuda, Scenario)> {
        let gpu = gpu()?;
        if std::env::var_os(engram_mnist::ENV_VAR).is_none() {
            skip("ENGRAM_DATA is not set (the whole-run GPU tests need the real MNIST)");
            return None;
        }
        let Mnist { train, test } =
            engram_mnist::load(None, Verify::Sha256).expect("ENGRAM_DATA is set but MNIST does not load");
        Some((gpu, build(spec, train.into(), test.into()).expect("the scenario builds")))
    }

    /// The protocol's configuration of `method` on `kind` (what `engram run` resolves).
    fn protocol(kind: ScenarioKind, method: Method, o: &Overrides) -> RunConfig {
        let si = (SiGrad::Task, SiRelu::Official);
        resolve(kind, method, o, 0, si, (FisherKind::Empirical, EwcMode::Separate, 1.0), 1024, false).0
    }

    fn run_on<B: RunBackend>(be: &B, sc: &Scenario, cfg: &RunConfig, start: Start) -> RunResult {
        run_with(be, sc, cfg, start, None, |_| {}).unwrap_or_else(|e| panic!("{:?} on {}: {e}", cfg.method, be.name()))
    }

    fn bits(r: &[Vec<f64>]) -> Vec<Vec<u64>> {
        r.iter().map(|row| row.iter().map(|v| v.to_bits()).collect()).collect()
    }

    /// The checkpoints of a run of `cfg` on `be`, one every `every` steps.
    fn checkpoints<B: RunBackend>(be: &B, sc: &Scenario, cfg: &RunConfig, every: u64) -> (RunResult, Vec<Checkpoint>) {
        let spec = ScenarioSpec::new(ScenarioKind::SplitMnist);
        let mut saved = Vec::new();
        let mut save = |ck: &Checkpoint, _steps: u64| -> Result<(), String> {
            // Through the bytes on disk, as `engram resume` reads them.
            let (manifest, tensors) = ck.to_bytes().map_err(|e| e.to_string())?;
            saved.push(Checkpoint::from_bytes(&manifest, &tensors).map_err(|e| e.to_string())?);
            Ok(())
        };
        let ck = Checkpointing { every: Some(every), spec: &spec, cli: serde_json::Value::Null, save: &mut save };
        let res = run_with(be, sc, cfg, Start::Fresh, Some(ck), |_| {}).expect("the run finishes");
        (res, saved)
    }

    #[test]
    fn split_mnist_si_on_the_gpu_matches_the_cpu_and_itself() {
        let Some((gpu, sc)) = setup(&ScenarioSpec::new(ScenarioKind::SplitMnist)) else { return };
        let cfg = protocol(ScenarioKind::SplitMnist, Method::Si, &Overrides::default());
        let cpu = run_on(&Cpu::new(), &sc, &cfg, Start::Fresh);
        let first = run_on(&gpu, &sc, &cfg, Start::Fresh);
        let second = run_on(&gpu, &sc, &cfg, Start::Fresh);
        println!(
            "split-mnist SI: ACC cpu {:.2} ({:.1} s), cuda {:.2} ({:.1} s, again {:.1} s); {}",
            100.0 * cpu.metrics.acc,
            cpu.wall_seconds,
            100.0 * first.metrics.acc,
            first.wall_seconds,
            second.wall_seconds,
            first.device
        );
        assert!(
            (first.metrics.acc - cpu.metrics.acc).abs() <= 0.003,
            "ACC on the GPU {} vs the CPU {}",
            first.metrics.acc,
            cpu.metrics.acc
        );
        assert_eq!(bits(&first.r), bits(&second.r), "two GPU runs differ");
    }

    #[test]
    fn every_method_on_the_gpu_tracks_the_cpu() {
        let spec = ScenarioSpec { samples_per_task: Some(2000), ..ScenarioSpec::new(ScenarioKind::SplitMnist) };
        let Some((gpu, sc)) = setup(&spec) else { return };
        let o = Overrides { epochs: Some(1), ..Overrides::default() };
        let mut methods: Vec<(String, RunConfig)> = [
            Method::Finetune,
            Method::Joint,
            Method::L2,
            Method::Ewc,
            Method::Mas,
            Method::Si,
            Method::Gem,
            Method::Agem,
        ]
        .into_iter()
        .map(|m| (m.name().to_string(), protocol(ScenarioKind::SplitMnist, m, &o)))
        .collect();
        let online =
            RunConfig { ewc_mode: EwcMode::Online, gamma: 0.9, ..protocol(ScenarioKind::SplitMnist, Method::Ewc, &o) };
        methods.push(("ewc online".into(), online));
        for (name, cfg) in methods {
            let cpu = run_on(&Cpu::new(), &sc, &cfg, Start::Fresh);
            let cuda = run_on(&gpu, &sc, &cfg, Start::Fresh);
            println!(
                "{name}: ACC cpu {:.2} ({:.1} s), cuda {:.2} ({:.1} s)",
                100.0 * cpu.metrics.acc,
                cpu.wall_seconds,
                100.0 * cuda.metrics.acc,
                cuda.wall_seconds
            );
            assert!(cuda.r.iter().flatten().all(|v| v.is_finite()), "{name}: R on the GPU is not finite");
            assert!(
                (cuda.metrics.acc - cpu.metrics.acc).abs() <= 0.02,
                "{name}: ACC cuda {} cpu {}",
                cuda.metrics.acc,
                cpu.metrics.acc
            );
        }
    }

    #[test]
    fn checkpoints_move_between_the_gpu_and_the_cpu() {
        let Some((gpu, sc)) = setup(&ScenarioSpec::new(ScenarioKind::SplitMnist)) else { return };
        let cfg = protocol(ScenarioKind::SplitMnist, Method::Si, &Overrides::default());
        let cpu = Cpu::new();
        let (gpu_run, gpu_saved) = checkpoints(&gpu, &sc, &cfg, 333);
        let (cpu_run, cpu_saved) = checkpoints(&cpu, &sc, &cfg, 333);
        assert!(gpu_saved.len() >= 2 && gpu_saved.len() == cpu_saved.len(), "{} checkpoints", gpu_saved.len());
        // A mid-run checkpoint (mid-task: 333 steps is no multiple of a task's length).
        let k = gpu_saved.len() / 2;
        for (what, ck, uninterrupted, resumed) in [
            (
                "GPU checkpoint resumed on the CPU",
                &gpu_saved[k],
                &gpu_run,
                run_on(&cpu, &sc, &cfg, Start::Resume(Box::new(gpu_saved[k].clone()))),
            ),
            (
                "CPU checkpoint resumed on the GPU",
                &cpu_saved[k],
                &cpu_run,
                run_on(&gpu, &sc, &cfg, Start::Resume(Box::new(cpu_saved[k].clone()))),
            ),
        ] {
            let done = engram_cl::checkpoint::progress(ck).expect("a run checkpoint").phases_done;
            println!(
                "{what} after {done} task(s): ACC {:.2}, uninterrupted {:.2}",
                100.0 * resumed.metrics.acc,
                100.0 * uninterrupted.metrics.acc
            );
            assert!(done >= 1, "{what}: the checkpoint should follow a task end");
            assert_eq!(
                bits(&resumed.r[..done]),
                bits(&uninterrupted.r[..done]),
                "{what}: the rows before the checkpoint"
            );
            assert!(
                (resumed.metrics.acc - uninterrupted.metrics.acc).abs() <= 0.003,
                "{what}: ACC {} vs {}",
                resumed.metrics.acc,
                uninterrupted.metrics.acc
            );
        }
        // The GPU resumes its own checkpoint bit for bit.
        let again = run_on(&gpu, &sc, &cfg, Start::Resume(Box::new(gpu_saved[k].clone())));
        assert_eq!(bits(&again.r), bits(&gpu_run.r), "a GPU run resumed on the GPU");
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn whole_runs_on_the_gpu() {
    engram_tape::test_device::skip("built without --features cuda");
}
