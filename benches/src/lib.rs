//! Shared helpers for vmigrate's benchmark programs.

/// Deterministic fast random bytes (xorshift64*), never a zero 8-byte word: bench images must be
/// the same in every run (so runs compare) and must not contain zero blocks the engine would
/// skip by design, which would flatter it.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (a zero seed is bumped: xorshift would stay at zero).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Fill `buf` with random bytes, no 8-byte word of them zero.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64() | 1;
            c.copy_from_slice(&v.to_le_bytes()[..c.len()]);
        }
    }
}
