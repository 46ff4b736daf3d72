//! The sled implementation of [`Backend`](super::Backend). (Being written.)
