//! protocol::defaults and protocol::resolve: the published settings and how overrides apply.

use engram_cl::config::{InitChoice, RunConfig};
use engram_cl::methods::importance::FisherKind;
use engram_cl::methods::{EwcMode, Method, SiGrad, SiRelu};
use engram_cl::protocol::{defaults, resolve, Overrides};
use engram_cl::scenario::ScenarioKind;
use engram_si::Optimizer;

const KINDS: [ScenarioKind; 4] =
    [ScenarioKind::SplitMnist, ScenarioKind::PermutedMnist, ScenarioKind::RotatedMnist, ScenarioKind::EvenOdd];
const METHODS: [Method; 6] = [Method::Finetune, Method::Joint, Method::L2, Method::Ewc, Method::Mas, Method::Si];

fn resolved(kind: ScenarioKind, method: Method, o: &Overrides) -> (RunConfig, Option<usize>) {
    resolve(
        kind,
        method,
        o,
        3,
        (SiGrad::Task, SiRelu::Official),
        (FisherKind::Empirical, EwcMode::Online, 0.8),
        123,
        true,
    )
}

/// The SI paper's Split MNIST and Permuted MNIST settings, and the GEM rotations' settings.
#[test]
fn published_defaults() {
    let d = defaults(ScenarioKind::SplitMnist, Method::Si);
    assert_eq!((d.hidden, d.layers, d.optimizer, d.batch, d.epochs), (256, 2, Optimizer::adam(1e-3), 64, 10));
    assert!(d.reset_optimizer && d.zero_output);
    assert_eq!((d.strength, d.xi), (1.0, 1e-3));
    let d = defaults(ScenarioKind::PermutedMnist, Method::Si);
    assert_eq!((d.hidden, d.batch, d.epochs, d.strength, d.xi), (2000, 256, 20, 0.1, 0.1));
    assert!(!d.reset_optimizer);
    let d = defaults(ScenarioKind::RotatedMnist, Method::Finetune);
    assert_eq!(
        (d.hidden, d.optimizer, d.batch, d.epochs, d.samples_per_task),
        (100, Optimizer::Sgd { lr: 0.003 }, 10, 1, Some(1000))
    );
    assert_eq!(defaults(ScenarioKind::RotatedMnist, Method::Ewc).optimizer.lr(), 0.01);
    for k in KINDS {
        assert_eq!(defaults(k, Method::Finetune).strength, 0.0);
        assert_eq!(defaults(k, Method::Joint).strength, 0.0);
    }
}

/// resolve: no override gives the defaults (and a valid config); EWC's fused c is lambda / 2,
/// the others' c is the strength; every override is honoured; the side arguments pass through.
#[test]
fn resolve_applies_defaults_and_overrides() {
    for k in KINDS {
        for m in METHODS {
            let d = defaults(k, m);
            let (c, spt) = resolved(k, m, &Overrides::default());
            c.validate().unwrap_or_else(|e| panic!("{k:?} {m:?}: {e}"));
            assert_eq!(c.method, m);
            assert_eq!(c.init, d.init, "the benchmark's initialisation unless --init says otherwise");
            let official =
                if k == ScenarioKind::EvenOdd { InitChoice::KaimingUniform } else { InitChoice::XavierUniform };
            assert_eq!(d.init, official, "{k:?}: the official code's initialisation");
            assert_eq!((c.hidden, c.layers, c.batch, c.epochs), (d.hidden, d.layers, d.batch, d.epochs));
            assert_eq!((c.strength, c.xi, c.optimizer.lr()), (d.strength, d.xi, d.optimizer.lr()));
            assert_eq!(c.c, if m == Method::Ewc { d.strength / 2.0 } else { d.strength });
            assert_eq!((c.zero_output, c.reset_optimizer), (d.zero_output, d.reset_optimizer));
            assert_eq!(spt, d.samples_per_task);
            assert_eq!((c.seed, c.importance_samples, c.eval_train, c.gamma), (3, 123, true, 0.8));
            assert_eq!(
                (c.ewc_mode, c.fisher, c.si_grad, c.si_relu),
                (EwcMode::Online, FisherKind::Empirical, SiGrad::Task, SiRelu::Official)
            );
        }
    }
    let o = Overrides {
        strength: Some(7.0),
        xi: Some(0.5),
        lr: Some(0.2),
        optimizer: Some(Optimizer::Sgd { lr: f32::NAN }),
        epochs: Some(1),
        batch: Some(5),
        hidden: Some(9),
        layers: Some(3),
        reset_optimizer: Some(false),
        zero_output: Some(false),
        init: Some(InitChoice::XavierUniform),
        samples_per_task: Some(11),
        memories: Some(13),
        memory_strength: Some(0.25),
    };
    let (c, spt) = resolved(ScenarioKind::SplitMnist, Method::Ewc, &o);
    assert_eq!((c.memories, c.memory_strength), (13, 0.25));
    assert_eq!((c.strength, c.c, c.xi), (7.0, 3.5, 0.5));
    assert_eq!(c.optimizer, Optimizer::Sgd { lr: 0.2 });
    assert_eq!((c.epochs, c.batch, c.hidden, c.layers), (1, 5, 9, 3));
    assert!(!c.reset_optimizer && !c.zero_output);
    assert_eq!(c.init, InitChoice::XavierUniform);
    assert_eq!(spt, Some(11));
    let (c, _) = resolved(
        ScenarioKind::RotatedMnist,
        Method::Si,
        &Overrides { optimizer: Some(Optimizer::adam(f32::NAN)), ..Overrides::default() },
    );
    assert_eq!(c.optimizer, Optimizer::adam(0.003));
}
