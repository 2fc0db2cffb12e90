//! The ggml type table: ids, names and block geometry (shared by the GGUF container and the block formats).

use std::fmt;

/// A ggml tensor type that can appear in a GGUF file.
///
/// Ids 4, 5, 31–33 and 36–38 were removed from ggml; they are not representable here and a file that uses
/// them is listed with its raw id (see the container) but refused when its data is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlDType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2K = 10,
    Q3K = 11,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    Q8K = 15,
    IQ2XXS = 16,
    IQ2XS = 17,
    IQ3XXS = 18,
    IQ1S = 19,
    IQ4NL = 20,
    IQ3S = 21,
    IQ2S = 22,
    IQ4XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
    Q2_0 = 42,
}

/// Every type, in id order.
pub const ALL_TYPES: [GgmlDType; 35] = {
    use GgmlDType::*;
    [
        F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2K, Q3K, Q4K, Q5K, Q6K, Q8K, IQ2XXS, IQ2XS, IQ3XXS, IQ1S, IQ4NL,
        IQ3S, IQ2S, IQ4XS, I8, I16, I32, I64, F64, IQ1M, BF16, TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0, Q2_0,
    ]
};

impl GgmlDType {
    /// The type with this ggml id, if ggml still defines it.
    pub fn from_id(id: u32) -> Option<GgmlDType> {
        ALL_TYPES.iter().copied().find(|t| *t as u32 == id)
    }

    /// The type with this name (`"Q4_K"`, case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlDType> {
        ALL_TYPES.iter().copied().find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    /// The name used by ggml, gguf-py and llama.cpp (`"Q4_K"`, `"IQ2_XXS"`).
    pub fn name(self) -> &'static str {
        use GgmlDType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            IQ2XXS => "IQ2_XXS",
            IQ2XS => "IQ2_XS",
            IQ3XXS => "IQ3_XXS",
            IQ1S => "IQ1_S",
            IQ4NL => "IQ4_NL",
            IQ3S => "IQ3_S",
            IQ2S => "IQ2_S",
            IQ4XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
            NVFP4 => "NVFP4",
            Q1_0 => "Q1_0",
            Q2_0 => "Q2_0",
        }
    }

    /// This type's block: elements and bytes (see [`block`]).
    pub const fn block(self) -> BlockType {
        use GgmlDType::*;
        match self {
            F32 => block::F32,
            F16 => block::F16,
            Q4_0 => block::Q4_0,
            Q4_1 => block::Q4_1,
            Q5_0 => block::Q5_0,
            Q5_1 => block::Q5_1,
            Q8_0 => block::Q8_0,
            Q8_1 => block::Q8_1,
            Q2K => block::Q2_K,
            Q3K => block::Q3_K,
            Q4K => block::Q4_K,
            Q5K => block::Q5_K,
            Q6K => block::Q6_K,
            Q8K => block::Q8_K,
            IQ2XXS => block::IQ2_XXS,
            IQ2XS => block::IQ2_XS,
            IQ3XXS => block::IQ3_XXS,
            IQ1S => block::IQ1_S,
            IQ4NL => block::IQ4_NL,
            IQ3S => block::IQ3_S,
            IQ2S => block::IQ2_S,
            IQ4XS => block::IQ4_XS,
            I8 => block::I8,
            I16 => block::I16,
            I32 => block::I32,
            I64 => block::I64,
            F64 => block::F64,
            IQ1M => block::IQ1_M,
            BF16 => block::BF16,
            TQ1_0 => block::TQ1_0,
            TQ2_0 => block::TQ2_0,
            MXFP4 => block::MXFP4,
            NVFP4 => block::NVFP4,
            Q1_0 => block::Q1_0,
            Q2_0 => block::Q2_0,
        }
    }

    /// (elements per block, bytes per block), as ggml's `sizeof(block_*)`.
    pub const fn block_geometry(self) -> (usize, usize) {
        let b = self.block();
        (b.elems, b.bytes)
    }

    pub const fn block_elems(self) -> usize {
        self.block().elems
    }

    pub const fn block_bytes(self) -> usize {
        self.block().bytes
    }

    /// Whether values of this type are integers (I8..I64), which dequantize by plain conversion.
    pub fn is_integer(self) -> bool {
        matches!(self, GgmlDType::I8 | GgmlDType::I16 | GgmlDType::I32 | GgmlDType::I64)
    }

    /// Bytes needed for `n_elems` elements, or `None` when `n_elems` is not a whole number of blocks or
    /// the size overflows.
    pub fn bytes_for(self, n_elems: u64) -> Option<u64> {
        let (be, bb) = self.block_geometry();
        if !n_elems.is_multiple_of(be as u64) {
            return None;
        }
        (n_elems / be as u64).checked_mul(bb as u64)
    }
}

/// The geometry of one block type: how many elements a block holds and how many bytes it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockType {
    pub elems: usize,
    pub bytes: usize,
}

/// One definition per block type. Each size is written as the block's layout (what ggml's `block_*` struct
/// holds, field by field); the scalar decoders (through [`super::BlockFormat`]), the SIMD kernels, the
/// quantizers and the Python side (`_core._ggml_types()`) all take their sizes from here. The checks at the
/// end compare every layout with ggml's `sizeof(block_*)` at compile time.
pub mod block {
    use super::BlockType;
    use std::mem::size_of;

    /// Elements of a legacy block (Q4_0 .. Q8_1, IQ4_NL, MXFP4).
    pub const QK: usize = 32;
    /// Elements of a K-quant / i-quant / ternary super-block.
    pub const QK_K: usize = 256;
    /// Bytes of one f16 scale.
    const H: usize = 2;

    const fn b(elems: usize, bytes: usize) -> BlockType {
        BlockType { elems, bytes }
    }

    pub const F32: BlockType = b(1, size_of::<f32>());
    pub const F16: BlockType = b(1, H);
    pub const BF16: BlockType = b(1, H);
    pub const F64: BlockType = b(1, size_of::<f64>());
    pub const I8: BlockType = b(1, size_of::<i8>());
    pub const I16: BlockType = b(1, size_of::<i16>());
    pub const I32: BlockType = b(1, size_of::<i32>());
    pub const I64: BlockType = b(1, size_of::<i64>());
    /// d, 32 nibbles.
    pub const Q4_0: BlockType = b(QK, H + QK / 2);
    /// d, m, 32 nibbles.
    pub const Q4_1: BlockType = b(QK, 2 * H + QK / 2);
    /// d, 32 high bits, 32 nibbles.
    pub const Q5_0: BlockType = b(QK, H + QK / 8 + QK / 2);
    /// d, m, 32 high bits, 32 nibbles.
    pub const Q5_1: BlockType = b(QK, 2 * H + QK / 8 + QK / 2);
    /// d, 32 int8.
    pub const Q8_0: BlockType = b(QK, H + QK);
    /// d, s (= d * sum), 32 int8.
    pub const Q8_1: BlockType = b(QK, 2 * H + QK);
    /// 16 scale/min nibble pairs, 2-bit quants, d, dmin.
    pub const Q2_K: BlockType = b(QK_K, QK_K / 16 + QK_K / 4 + 2 * H);
    /// high-bit mask, 2-bit low quants, 12 bytes of 6-bit scales, d.
    pub const Q3_K: BlockType = b(QK_K, QK_K / 8 + QK_K / 4 + 12 + H);
    /// d, dmin, 12 bytes of 6-bit scales/mins, nibbles.
    pub const Q4_K: BlockType = b(QK_K, 2 * H + 12 + QK_K / 2);
    /// d, dmin, 12 bytes of scales/mins, high bits, nibbles.
    pub const Q5_K: BlockType = b(QK_K, 2 * H + 12 + QK_K / 8 + QK_K / 2);
    /// low nibbles, 2 high bits each, 16 int8 scales, d.
    pub const Q6_K: BlockType = b(QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + H);
    /// f32 d, 256 int8, 16 i16 block sums.
    pub const Q8_K: BlockType = b(QK_K, size_of::<f32>() + QK_K + QK_K / 16 * size_of::<i16>());
    /// d, 32 u16 (grid index and sign/scale bits per 8 values).
    pub const IQ2_XXS: BlockType = b(QK_K, H + QK_K / 8 * 2);
    /// d, 32 u16, 8 scale bytes.
    pub const IQ2_XS: BlockType = b(QK_K, H + QK_K / 8 * 2 + QK_K / 32);
    /// d, 64 grid bytes, 16 sign bytes, 8 high bytes, 8 scale bytes (all over 256 values).
    pub const IQ2_S: BlockType = b(QK_K, H + QK_K / 4 + QK_K / 16);
    /// d, 3/8 byte per value (grid indices, then signs and scales).
    pub const IQ3_XXS: BlockType = b(QK_K, H + 3 * QK_K / 8);
    /// d, grid indices, high bits, signs, scales.
    pub const IQ3_S: BlockType = b(QK_K, H + QK_K / 4 + QK_K / 32 + QK_K / 8 + QK_K / 64);
    /// d, 32 grid bytes, 8 u16 high bits and scales.
    pub const IQ1_S: BlockType = b(QK_K, H + QK_K / 8 + QK_K / 16);
    /// 32 grid bytes, 16 high bytes, 8 scale bytes (the f16 scale is spread over the scales).
    pub const IQ1_M: BlockType = b(QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32);
    /// d, 32 nibbles (codebook indices).
    pub const IQ4_NL: BlockType = b(QK, H + QK / 2);
    /// d, u16 high scale bits, 8 low scale nibble bytes, nibbles.
    pub const IQ4_XS: BlockType = b(QK_K, H + 2 + QK_K / 64 + QK_K / 2);
    /// base-3 digits 5 per byte (240 values), 4 per byte (16 values), d.
    pub const TQ1_0: BlockType = b(QK_K, (QK_K - 4 * QK_K / 64) / 5 + QK_K / 64 + H);
    /// 2 bits per value, d.
    pub const TQ2_0: BlockType = b(QK_K, QK_K / 4 + H);
    /// E8M0 exponent, 32 FP4 nibbles.
    pub const MXFP4: BlockType = b(QK, 1 + QK / 2);
    /// 4 UE4M3 scales (one per 16), 64 FP4 nibbles.
    pub const NVFP4: BlockType = b(64, 64 / 16 + 64 / 2);
    /// d, 128 sign bits.
    pub const Q1_0: BlockType = b(128, H + 128 / 8);
    /// d, 64 2-bit values.
    pub const Q2_0: BlockType = b(64, H + 64 / 4);

    /// ggml's `sizeof(block_*)` and block lengths, the reference the layouts above must give.
    const GGML: [(BlockType, usize, usize); 35] = [
        (F32, 1, 4),
        (F16, 1, 2),
        (BF16, 1, 2),
        (F64, 1, 8),
        (I8, 1, 1),
        (I16, 1, 2),
        (I32, 1, 4),
        (I64, 1, 8),
        (Q4_0, 32, 18),
        (Q4_1, 32, 20),
        (Q5_0, 32, 22),
        (Q5_1, 32, 24),
        (Q8_0, 32, 34),
        (Q8_1, 32, 36),
        (Q2_K, 256, 84),
        (Q3_K, 256, 110),
        (Q4_K, 256, 144),
        (Q5_K, 256, 176),
        (Q6_K, 256, 210),
        (Q8_K, 256, 292),
        (IQ2_XXS, 256, 66),
        (IQ2_XS, 256, 74),
        (IQ2_S, 256, 82),
        (IQ3_XXS, 256, 98),
        (IQ3_S, 256, 110),
        (IQ1_S, 256, 50),
        (IQ1_M, 256, 56),
        (IQ4_NL, 32, 18),
        (IQ4_XS, 256, 136),
        (TQ1_0, 256, 54),
        (TQ2_0, 256, 66),
        (MXFP4, 32, 17),
        (NVFP4, 64, 36),
        (Q1_0, 128, 18),
        (Q2_0, 64, 18),
    ];

    const _: () = {
        let mut i = 0;
        while i < GGML.len() {
            let (t, elems, bytes) = GGML[i];
            assert!(t.elems == elems && t.bytes == bytes, "a block layout disagrees with ggml's sizeof(block_*)");
            // Blocks are whole bytes and the SIMD kernels decode 16 elements at a time.
            assert!(t.elems == 1 || t.elems % 16 == 0);
            i += 1;
        }
    };
}

impl fmt::Display for GgmlDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_round_trip() {
        for t in ALL_TYPES {
            assert_eq!(GgmlDType::from_id(t.id()), Some(t));
            assert_eq!(GgmlDType::from_name(t.name()), Some(t));
        }
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 43, 1000] {
            assert_eq!(GgmlDType::from_id(removed), None);
        }
        assert_eq!(GgmlDType::from_name("q4_k"), Some(GgmlDType::Q4K));
    }

    #[test]
    fn every_type_has_its_block() {
        for t in ALL_TYPES {
            let b = t.block();
            assert_eq!((t.block_elems(), t.block_bytes()), (b.elems, b.bytes));
            assert!(b.bytes > 0 && b.elems > 0);
        }
        assert_eq!(GgmlDType::Q6K.block(), BlockType { elems: 256, bytes: 210 });
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(GgmlDType::Q4K.bytes_for(512), Some(288));
        assert_eq!(GgmlDType::Q4K.bytes_for(100), None);
        assert_eq!(GgmlDType::F32.bytes_for(u64::MAX), None);
    }
}
