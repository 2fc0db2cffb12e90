"""Block-layout facts the tests share: the byte offset of each f16 scale field in one block of a ggml type
(ggml's block structs; the types whose specials reach the output through a scale)."""

F16_SCALE_OFFSETS = {
    "Q4_0": [0],
    "Q5_0": [0],
    "Q8_0": [0],
    "IQ4_NL": [0],
    "IQ2_XXS": [0],
    "IQ2_XS": [0],
    "IQ2_S": [0],
    "IQ3_XXS": [0],
    "IQ3_S": [0],
    "IQ1_S": [0],
    "IQ4_XS": [0],
    "Q1_0": [0],
    "Q2_0": [0],
    "Q4_1": [0, 2],
    "Q5_1": [0, 2],
    "Q4_K": [0, 2],
    "Q5_K": [0, 2],
    "Q2_K": [80, 82],
    "Q3_K": [108],
    "Q6_K": [208],
    "TQ1_0": [52],
    "TQ2_0": [64],
}
