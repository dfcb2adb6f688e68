//! Wait reasons by what they mean for blocking analysis. The numeric codes differ between Go
//! versions, so classification goes through the names read from the target binary.
use goscope_inspect::WaitReasonTable;

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

    /// Waits that park inside `runtime.semacquire1`, whose `addr` argument is the semaphore.
    pub fn parks_on_semaphore(self) -> bool {
        matches!(self, Self::Mutex | Self::RWMutexRead | Self::RWMutexWrite | Self::WaitGroup | Self::Semaphore)
    }

    /// Blocked on something another user goroutine must do (what leak/deadlock analysis is about).
    pub fn is_user_blocking(self) -> bool {
        !matches!(self, Self::Sleep | Self::IoWait | Self::Runtime | Self::Other)
    }
}

/// The target binary's wait-reason table, with each code's class precomputed.
#[derive(Debug, Clone, Default)]
pub struct WaitReasons {
    table: WaitReasonTable,
    classes: Vec<WaitClass>,
}

impl WaitReasons {
    /// The classes of `table`'s names.
    pub fn of(table: &WaitReasonTable) -> Self {
        let classes = table.names().iter().map(|n| WaitClass::of(n)).collect();
        Self { table: table.clone(), classes }
    }

    /// [`WaitReasons::of`] a table of these names, in code order.
    pub fn new(names: Vec<String>) -> Self {
        Self::of(&WaitReasonTable::from_names(names))
    }

    pub fn name(&self, code: u8) -> Option<&str> {
        self.table.name(code)
    }

    pub fn class(&self, code: u8) -> WaitClass {
        self.classes.get(usize::from(code)).copied().unwrap_or(WaitClass::Other)
    }

    /// The codes of semaphore waits as a 256-bit set (bit `n` of word `n / 64` = code `n`).
    pub fn semaphore_codes(&self) -> [u64; 4] {
        let mut set = [0u64; 4];
        for (code, class) in self.classes.iter().enumerate().take(256) {
            if class.parks_on_semaphore() {
                set[code / 64] |= 1 << (code % 64);
            }
        }
        set
    }
}

pub use goscope_inspect::runtime::NOTIFY_LIST_LOCK;

/// The sync primitive behind the runtime object a goroutine waits on, which sits at a fixed
/// offset inside it ([`goscope_inspect::runtime::sync_fields`]): a semaphore field or, for a
/// Cond, its notifyList.
pub fn sync_primitive(class: WaitClass, addr: Option<u64>) -> Option<u64> {
    use goscope_inspect::runtime::sync_fields as f;
    let field = match class {
        WaitClass::Mutex => f::MUTEX_SEMA,
        WaitClass::RWMutexWrite => f::RWMUTEX_WRITER_SEM,
        WaitClass::WaitGroup => f::WAITGROUP_SEMA,
        WaitClass::RWMutexRead => f::RWMUTEX_READER_SEM,
        WaitClass::Cond => f::COND_NOTIFY,
        _ => return None,
    };
    addr.filter(|&a| a != 0).and_then(|a| a.checked_sub(field))
}

/// The class of wait a sync package function parks for, for Go versions whose wait reason does
/// not say (before 1.21 every sync wait is "semacquire"; WaitGroup until 1.24).
pub fn sync_function_class(function: &str) -> Option<WaitClass> {
    Some(match function.strip_prefix("internal/").unwrap_or(function) {
        "sync.(*Mutex).Lock" | "sync.(*Mutex).lockSlow" => WaitClass::Mutex,
        "sync.(*RWMutex).RLock" => WaitClass::RWMutexRead,
        "sync.(*RWMutex).Lock" => WaitClass::RWMutexWrite,
        "sync.(*WaitGroup).Wait" => WaitClass::WaitGroup,
        "sync.(*Cond).Wait" => WaitClass::Cond,
        _ => return None,
    })
}

/// Functions of the packages that implement blocking (runtime, sync, internal/sync, iter): the
/// frames between a goroutine's own code and gopark.
pub fn is_synchronisation_internal(function: &str) -> bool {
    ["runtime.", "sync.", "sync/atomic.", "internal/sync.", "iter."].iter().any(|p| function.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semaphore_codes_follow_the_binary_names() {
        let names = ["", "chan receive", "semacquire", "sync.Mutex.Lock", "sync.Cond.Wait", "sync.WaitGroup.Wait (durable)"];
        let set = WaitReasons::new(names.iter().map(|s| s.to_string()).collect()).semaphore_codes();
        assert_eq!(set, [0b10_1100, 0, 0, 0]);
    }

    #[test]
    fn primitives_from_their_runtime_objects() {
        assert_eq!(sync_primitive(WaitClass::Mutex, Some(0x1004)), Some(0x1000));
        assert_eq!(sync_primitive(WaitClass::RWMutexRead, Some(0x100c)), Some(0x1000));
        assert_eq!(sync_primitive(WaitClass::RWMutexWrite, Some(0x1008)), Some(0x1000));
        assert_eq!(sync_primitive(WaitClass::WaitGroup, Some(0x1008)), Some(0x1000));
        assert_eq!(sync_primitive(WaitClass::Cond, Some(0x1010)), Some(0x1000));
        assert_eq!(sync_primitive(WaitClass::Semaphore, Some(0x1004)), None, "which primitive is unknown");
        assert_eq!(sync_primitive(WaitClass::Mutex, Some(0)), None);
        assert_eq!(sync_primitive(WaitClass::Mutex, Some(2)), None);
    }

    #[test]
    fn sync_functions_name_their_class() {
        assert_eq!(sync_function_class("internal/sync.(*Mutex).lockSlow"), Some(WaitClass::Mutex));
        assert_eq!(sync_function_class("sync.(*RWMutex).RLock"), Some(WaitClass::RWMutexRead));
        assert_eq!(sync_function_class("sync.runtime_SemacquireMutex"), None);
        assert_eq!(sync_function_class("main.worker"), None);
    }
}
