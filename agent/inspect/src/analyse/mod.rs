//! The analysis of a Go binary, step by step: [`buildinfo`] (is it Go, which release), [`symbols`]
//! (the function tables), [`layout`] (wait reasons and struct layout); probe placement follows
//! in `GoBinary`'s analysis itself.
pub(crate) mod buildinfo;
pub(crate) mod layout;
pub(crate) mod symbols;
