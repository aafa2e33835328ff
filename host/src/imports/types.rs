//! The `types` interface: types only, no functions.

use host_core::wit::types::Host;

/// The `types` interface's (empty) context.
#[derive(Debug, Default)]
pub struct TypesCtx;

impl Host for TypesCtx {}
