//! Everything both ends of a keyservice connection must agree on, defined once.

mod secret;
pub mod ss1;
pub mod wire;

pub use secret::{RandomError, Secret, random_bytes};
