//! Fine-tuning and joint training: no penalty, no memory; the optimizer alone.
//!
//! * Fine-tuning trains on each task in turn (the lower bound, "None" in the literature).
//! * Joint training trains once on every task's data, shuffled together (the upper bound); its
//!   accuracy matrix has a single row.

use super::{Carried, Strategy};
use crate::state::{Run, RunBackend, RunError};
use engram_ckpt::Checkpoint;
use serde_json::Value;
use std::collections::BTreeMap;

/// Plain sequential training.
pub struct Finetune;

/// All tasks' data at once.
pub struct Joint;

macro_rules! stateless {
    ($t:ty, $joint:expr) => {
        impl<B: RunBackend> Strategy<B> for $t {
            fn joint(&self) -> bool {
                $joint
            }
            fn state_bytes(&self, _run: &Run<'_, B>) -> usize {
                0
            }
            fn save(
                &self,
                _run: &Run<'_, B>,
                _t: &mut BTreeMap<String, engram_ckpt::Tensor>,
            ) -> Result<Option<Value>, RunError> {
                Ok(None)
            }
            fn load(
                &mut self,
                _run: &Run<'_, B>,
                _ck: &Checkpoint,
                episodic: Option<&Value>,
                _done: usize,
            ) -> Result<(), String> {
                match episodic {
                    None => Ok(()),
                    Some(_) => Err("the checkpoint's episodic memory does not match the method".into()),
                }
            }
            fn carry(&mut self, _run: &Run<'_, B>, _c: &Carried) -> Result<(), String> {
                Ok(())
            }
        }
    };
}

stateless!(Finetune, false);
stateless!(Joint, true);
