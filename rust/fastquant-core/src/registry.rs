//! Method registry and dispatch rules.
