//! The analysis of a Go binary, step by step: [`buildinfo`] (is it Go, which release), [`symbols`]
//! (the function tables), [`layout`] (wait reasons and struct layout), [`sites`] (probe
//! placement).
pub(crate) mod buildinfo;
pub(crate) mod layout;
pub(crate) mod sites;
pub(crate) mod symbols;
