//! Wait reasons by what they mean for blocking analysis. The numeric codes differ between Go
//! versions, so classification goes through the names read from the target binary.

/// What kind of thing a parked goroutine waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitClass {
    ChanSend,
    ChanReceive,
    Select,
    /// `select {}` or an operation on a nil channel: blocked forever by construction.
    Forever,
    Mutex,
    RWMutexRead,
    RWMutexWrite,
    WaitGroup,
    Cond,
    /// Other semaphore waits (`semacquire`).
    Semaphore,
    Sleep,
    IoWait,
    /// The runtime's own waits (GC, finalizers, timers, trace readers, ...).
    Runtime,
    Other,
}

impl WaitClass {
    pub fn of(name: &str) -> Self {
        match name {
            "chan send" | "chan send (synctest)" | "chan send (durable)" => Self::ChanSend,
            "chan receive" | "chan receive (synctest)" | "chan receive (durable)" => Self::ChanReceive,
            "select" | "select (synctest)" | "select (durable)" => Self::Select,
            "select (no cases)" | "chan send (nil chan)" | "chan receive (nil chan)" => Self::Forever,
            "sync.Mutex.Lock" => Self::Mutex,
            "sync.RWMutex.RLock" => Self::RWMutexRead,
            "sync.RWMutex.Lock" => Self::RWMutexWrite,
            "sync.WaitGroup.Wait" | "sync.WaitGroup.Wait (durable)" => Self::WaitGroup,
            "sync.Cond.Wait" => Self::Cond,
            "semacquire" => Self::Semaphore,
            "sleep" => Self::Sleep,
            "IO wait" => Self::IoWait,
            "" => Self::Other,
            _ => Self::Runtime,
        }
    }

    /// Blocked on something another user goroutine must do (what leak/deadlock analysis is about).
    pub fn is_user_blocking(self) -> bool {
        !matches!(self, Self::Sleep | Self::IoWait | Self::Runtime | Self::Other)
    }
}

/// The target binary's wait-reason names, indexed by code, with their classes precomputed.
#[derive(Debug, Clone, Default)]
pub struct WaitReasons {
    names: Vec<String>,
    classes: Vec<WaitClass>,
}

impl WaitReasons {
    pub fn new(names: Vec<String>) -> Self {
        let classes = names.iter().map(|n| WaitClass::of(n)).collect();
        Self { names, classes }
    }

    pub fn name(&self, code: u8) -> Option<&str> {
        self.names.get(usize::from(code)).map(String::as_str)
    }

    pub fn class(&self, code: u8) -> WaitClass {
        self.classes.get(usize::from(code)).copied().unwrap_or(WaitClass::Other)
    }
}

/// Functions of the packages that implement blocking (runtime, sync, internal/sync, iter): the
/// frames between a goroutine's own code and gopark.
pub fn is_synchronisation_internal(function: &str) -> bool {
    ["runtime.", "sync.", "sync/atomic.", "internal/sync.", "iter."].iter().any(|p| function.starts_with(p))
}
