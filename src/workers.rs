//! Session threads: one single-threaded tokio runtime per thread, each driving
//! the sessions dealt to it. A session never migrates between threads, so no
//! work-stealing, no cross-thread wake-ups, and its two sockets are polled by
//! the same reactor that runs it. The main runtime keeps the listeners, the
//! probes and the admin server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    /// Starts `n` threads, each running a current-thread runtime until
    /// [`Workers::stop`].
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("pgsplit-worker-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            threads.push(thread);
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            stop,
            threads: Mutex::new(threads),
        })
    }

    /// The runtime for the next session (round robin).
    pub fn pick(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.handles[i % self.handles.len()]
    }

    /// Stops the runtimes (tasks still on them are dropped) and joins the threads.
    pub fn stop(&self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}
