//! What one instance may grow to inside its sandbox: linear memory up to the
//! listener's `memory-limit`, tables up to a fixed number of entries (a
//! plugin declaring a larger one is refused when it is loaded).

use wasmtime::ResourceLimiter;

/// Most table entries (function references) a table may have; the pool's
/// table slots are this large.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 20_000;

/// Caps an instance's linear memory; growing past the cap traps with
/// [`MemoryLimitExceeded`], so the connection's end says why.
pub(crate) struct MemoryLimiter {
    pub(crate) limit: usize,
}

/// The trap of an instance that grew its memory past the listener's limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit reached: the handler asked for {desired} bytes, the listener allows {limit}")]
pub struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

impl MemoryLimitExceeded {
    /// Whether `err`, a trap or its cause, is this limit.
    pub(crate) fn is_cause_of(err: &wasmtime::Error) -> bool {
        err.chain().any(|e| e.downcast_ref::<Self>().is_some())
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(MemoryLimitExceeded { desired, limit: self.limit }.into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
