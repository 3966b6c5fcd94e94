//! engram-mnist: the MNIST data set, read from its official IDX files, and the helpers
//! continual-learning scenarios build their tasks from.
//!
//! * [`idx`]: the IDX parser ([`parse_images`], [`parse_labels`]), gzipped or raw. It never
//!   panics and never trusts a header: sizes are checked before anything is allocated.
//! * [`load`](mod@load): finding the files ([`locate`]: `--data-dir`, then `$ENGRAM_DATA`, then
//!   `./data/mnist`, then the repository's `data/mnist`), checking their sha256 against the
//!   official digests ([`Verify`]) and decoding them into [`Mnist`] (pixels scaled to `[0, 1]`).
//! * [`tasks`]: class subsets ([`indices_of_classes`]), seeded pixel permutations
//!   ([`permutation`]) and rotations ([`rotate_image`], [`rotate_split`]).
//!
//! The files themselves are never part of the repository: `data/fetch.sh` downloads them,
//! `data/README.md` explains the rest.
//!
//! ```no_run
//! let mnist = engram_mnist::load(None, engram_mnist::Verify::Sha256)?;
//! assert_eq!((mnist.train.n, mnist.test.n, mnist.train.dim), (60000, 10000, 784));
//! # Ok::<(), engram_mnist::MnistError>(())
//! ```
#![warn(missing_docs)]

pub mod error;
pub mod idx;
pub mod load;
pub mod tasks;

pub use error::{Kind, MnistError, Tried};
pub use idx::{parse_images, parse_labels, IdxImages, MAX_IDX_BYTES};
pub use load::{
    default_dirs, find_file, has_files, load, load_dir, locate, locate_with, official_sha256, repo_data_dir, Mnist,
    Split, Verify, COLS, DIM, ENV_VAR, FILES, ROWS, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS,
};
pub use tasks::{indices_of_classes, permutation, permute_image, permute_split, rotate_image, rotate_split, Rotator};
