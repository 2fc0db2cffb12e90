//! ggml block formats (see the dequantization issue).
