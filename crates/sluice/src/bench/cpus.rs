//! Running a phase of a benchmark on one CPU: what one core does, measured as events
//! per second of that core rather than per CPU second of a process spread over
//! several (where threads hand work to each other across cores, and on a VM may
//! slow each other down on the host).

use anyhow::Context;
use rustix::thread::{CpuSet, Pid, sched_getaffinity, sched_setaffinity};

/// Every thread of this process confined to one CPU until dropped; then each thread
/// (also those started meanwhile, which inherited the one CPU) gets the CPUs it had.
pub struct OnOneCpu {
    before: CpuSet,
}

impl OnOneCpu {
    /// Confines the process's threads to `cpu`, which must be one this process may
    /// run on.
    pub fn pin(cpu: usize) -> anyhow::Result<OnOneCpu> {
        let before = check(cpu)?;
        let mut one = CpuSet::new();
        one.set(cpu);
        set_all_threads(&one)?;
        Ok(OnOneCpu { before })
    }
}

impl Drop for OnOneCpu {
    fn drop(&mut self) {
        if let Err(e) = set_all_threads(&self.before) {
            eprintln!("warning: cannot give the threads back their CPUs: {e:#}");
        }
    }
}

/// Whether this process may run on `cpu` (a readable error if not); the CPUs the
/// calling thread may run on.
pub fn check(cpu: usize) -> anyhow::Result<CpuSet> {
    let allowed = sched_getaffinity(None).context("cannot read this thread's CPUs")?;
    if cpu >= CpuSet::MAX_CPU || !allowed.is_set(cpu) {
        anyhow::bail!(
            "CPU {cpu} is not one this process may run on (it may use {})",
            list(&allowed)
        );
    }
    Ok(allowed)
}

/// How many CPUs the calling thread may run on.
pub fn allowed() -> u32 {
    sched_getaffinity(None).map(|s| s.count()).unwrap_or(0)
}

fn set_all_threads(cpus: &CpuSet) -> anyhow::Result<()> {
    // Twice: a thread started while the first pass ran inherits its creator's old set.
    for _ in 0..2 {
        for task in std::fs::read_dir("/proc/self/task").context("cannot list the threads")? {
            let tid = task?.file_name().to_string_lossy().parse::<i32>().ok();
            let Some(pid) = tid.and_then(Pid::from_raw) else {
                continue;
            };
            // A thread that ended meanwhile is not an error.
            match sched_setaffinity(Some(pid), cpus) {
                Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                Err(e) => return Err(e).context(format!("cannot set thread {pid:?}'s CPUs")),
            }
        }
    }
    Ok(())
}

fn list(cpus: &CpuSet) -> String {
    let ids: Vec<String> = (0..CpuSet::MAX_CPU)
        .filter(|&c| cpus.is_set(c))
        .map(|c| c.to_string())
        .collect();
    ids.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_phase_runs_on_one_cpu_and_gives_the_cpus_back() {
        let before = allowed();
        let first = (0..CpuSet::MAX_CPU)
            .find(|&c| sched_getaffinity(None).unwrap().is_set(c))
            .unwrap();
        {
            let _pinned = OnOneCpu::pin(first).unwrap();
            assert_eq!(allowed(), 1);
            // A thread started while pinned inherits the one CPU.
            assert_eq!(std::thread::spawn(allowed).join().unwrap(), 1);
        }
        assert_eq!(allowed(), before);
        let err = OnOneCpu::pin(CpuSet::MAX_CPU).err().unwrap().to_string();
        assert!(err.contains("not one this process may run on"), "{err}");
    }
}
