//! Go binary analysis (placeholder; being written).
