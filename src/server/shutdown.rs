//! SIGTERM/SIGINT: the first one starts the drain; a second one during the drain exits at once
//! with status 1.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};

/// Whether a shutdown was requested.
pub(crate) struct Shutdown {
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    /// Installs the handlers (signal-hook does the async-signal-safe part).
    pub(crate) fn install() -> std::io::Result<Shutdown> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [SIGTERM, SIGINT] {
            // Registered first, so it sees the flag as the previous signal left it: the second
            // signal exits the process, the first only sets the flag.
            signal_hook::flag::register_conditional_shutdown(signal, 1, flag.clone())?;
            signal_hook::flag::register(signal, flag.clone())?;
        }
        Ok(Shutdown { flag })
    }

    /// A switch without signal handlers (tests).
    #[cfg(test)]
    pub(crate) fn manual() -> Shutdown {
        Shutdown {
            flag: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Requests the shutdown as a signal would (tests).
    #[cfg(test)]
    pub(crate) fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// The flag itself (set by the signal handler).
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    pub(crate) fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}
