//! GGUF container: reader and writer (see the container issue).
