//! An in-memory filesystem that remembers what is durable, for crash and fault tests.
//!
//! Each file has its current bytes and the bytes as of its last `sync_data`; the
//! namespace has its current entries and the entries as of each directory's last
//! `sync_dir`. A crash image keeps only what was durable, plus (optionally) a random
//! prefix of each file's unsynced writes: a torn write. Directories themselves
//! are treated as durable once created.
//!
//! Faults: failing syncs, a space limit that turns writes into short writes followed
//! by `ENOSPC`, and capturing a crash image at the N-th sync point.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{DirLock, Fs, FsFile, OpenMode};

#[derive(Debug, Default, Clone)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
}

type InodeRef = Arc<Mutex<Inode>>;

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<PathBuf, InodeRef>,
    durable: BTreeMap<PathBuf, InodeRef>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    fail_syncs: bool,
    space_limit: Option<u64>,
    syncs: u64,
    bytes_read: u64,
    capture_at: Option<u64>,
    captured: Option<MemFs>,
    torn_seed: u64,
}

/// See the module docs. Clones share the same filesystem.
#[derive(Debug, Default, Clone)]
pub struct MemFs {
    state: Arc<Mutex<State>>,
}

impl MemFs {
    pub fn new() -> MemFs {
        MemFs::default()
    }

    /// Every later `sync_data`/`sync_dir` fails with EIO while set.
    pub fn set_fail_syncs(&self, fail: bool) {
        self.state.lock().fail_syncs = fail;
    }

    /// Caps the total bytes of all files; a write crossing the cap writes what fits and
    /// then fails with "no space left on device".
    pub fn set_space_limit(&self, limit: Option<u64>) {
        self.state.lock().space_limit = limit;
    }

    /// The bytes all reads of files returned so far.
    pub fn bytes_read(&self) -> u64 {
        self.state.lock().bytes_read
    }

    /// The number of sync points passed so far.
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Captures a crash image just before the `n`-th sync point (0-based) executes.
    /// `seed` drives how much of each unsynced tail the image keeps.
    pub fn capture_at(&self, n: u64, seed: u64) {
        let mut s = self.state.lock();
        s.capture_at = Some(n);
        s.torn_seed = seed;
        s.captured = None;
    }

    pub fn take_capture(&self) -> Option<MemFs> {
        self.state.lock().captured.take()
    }

    /// What would be on disk after a power cut now.
    pub fn crash_image(&self, seed: u64) -> MemFs {
        let s = self.state.lock();
        Self::image_of(&s, seed)
    }

    fn image_of(s: &State, seed: u64) -> MemFs {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut copies: Vec<(InodeRef, InodeRef)> = Vec::new();
        let mut files = BTreeMap::new();
        for (path, inode) in &s.durable {
            let copy = match copies.iter().find(|(orig, _)| Arc::ptr_eq(orig, inode)) {
                Some((_, copy)) => copy.clone(),
                None => {
                    // The unsynced writes reached the disk up to a random point
                    // from where the file first differs from its synced bytes:
                    // appends and writes over synced bytes (say, zeros written
                    // ahead) alike are torn there.
                    let i = inode.lock();
                    let same = i.synced.iter().zip(&i.data).take_while(|(a, b)| a == b);
                    let torn = rng.usize(same.count()..=i.data.len());
                    let mut data = i.data[..torn].to_vec();
                    if i.synced.len() > torn {
                        data.extend_from_slice(&i.synced[torn..]);
                    }
                    let copy = Arc::new(Mutex::new(Inode {
                        synced: data.clone(),
                        data,
                    }));
                    copies.push((inode.clone(), copy.clone()));
                    copy
                }
            };
            files.insert(path.clone(), copy);
        }
        MemFs {
            state: Arc::new(Mutex::new(State {
                durable: files.clone(),
                files,
                dirs: s.dirs.clone(),
                ..State::default()
            })),
        }
    }

    /// Counts a sync point; captures an image if asked; fails if syncs fail.
    fn sync_point(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        let n = s.syncs;
        s.syncs += 1;
        if s.capture_at == Some(n) {
            let seed = s.torn_seed;
            s.captured = Some(Self::image_of(&s, seed));
        }
        if s.fail_syncs {
            return Err(io::Error::other("injected fsync failure (EIO)"));
        }
        Ok(())
    }

    /// Flips one bit of a file's current and durable contents (bit rot).
    pub fn flip_bit(&self, path: &Path, byte: usize, bit: u8) -> io::Result<()> {
        let s = self.state.lock();
        let inode = s.files.get(path).ok_or(io::ErrorKind::NotFound)?;
        let mut i = inode.lock();
        if byte >= i.data.len() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        i.data[byte] ^= 1 << bit;
        if byte < i.synced.len() {
            i.synced[byte] ^= 1 << bit;
        }
        Ok(())
    }

    /// Paths of all files, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state.lock().files.keys().cloned().collect()
    }

    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let s = self.state.lock();
        s.files.get(path).map(|i| i.lock().data.len() as u64)
    }
}

#[derive(Debug)]
struct MemFile {
    fs: MemFs,
    inode: InodeRef,
    writable: bool,
}

impl FsFile for MemFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let i = self.inode.lock();
        let pos = usize::try_from(pos).map_err(|_| io::ErrorKind::InvalidInput)?;
        if pos >= i.data.len() {
            return Ok(0);
        }
        let n = buf.len().min(i.data.len() - pos);
        buf[..n].copy_from_slice(&i.data[pos..pos + n]);
        drop(i);
        self.fs.state.lock().bytes_read += n as u64;
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::other("file opened read-only"));
        }
        let limit = {
            let s = self.fs.state.lock();
            s.space_limit
                .map(|l| l.saturating_sub(Self::used_by_others(&s, &self.inode)))
        };
        let mut i = self.inode.lock();
        let pos = usize::try_from(pos).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut n = buf.len();
        if let Some(limit) = limit {
            let room = (limit as usize).saturating_sub(pos);
            if room == 0 && !buf.is_empty() && pos + buf.len() > i.data.len() {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            n = n.min(room.max(i.data.len().saturating_sub(pos)));
        }
        if i.data.len() < pos + n {
            i.data.resize(pos + n, 0);
        }
        i.data[pos..pos + n].copy_from_slice(&buf[..n]);
        Ok(n)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fs.sync_point()?;
        let mut i = self.inode.lock();
        i.synced = i.data.clone();
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.inode.lock().data.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.inode.lock().data.resize(len, 0);
        Ok(())
    }
}

impl MemFile {
    fn used_by_others(s: &State, me: &InodeRef) -> u64 {
        s.files
            .values()
            .filter(|i| !Arc::ptr_eq(i, me))
            .map(|i| i.lock().data.len() as u64)
            .sum()
    }
}

#[derive(Debug)]
struct MemLock {
    fs: MemFs,
    path: PathBuf,
}

impl DirLock for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        self.fs.state.lock().locks.remove(&self.path);
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl Fs for MemFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>> {
        let mut s = self.state.lock();
        let parent = path.parent().unwrap_or(Path::new(""));
        if !s.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        let inode = match (s.files.get(path).cloned(), mode) {
            (Some(i), OpenMode::CreateTruncate) => {
                i.lock().data.clear();
                i
            }
            (Some(i), _) => i,
            (None, OpenMode::Create | OpenMode::CreateTruncate) => {
                let i = InodeRef::default();
                s.files.insert(path.to_path_buf(), i.clone());
                i
            }
            (None, _) => return Err(not_found(path)),
        };
        Ok(Arc::new(MemFile {
            fs: self.clone(),
            inode,
            writable: mode != OpenMode::Read,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        for a in path.ancestors() {
            s.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        if !s.dirs.contains(path) {
            return Err(not_found(path));
        }
        let files = s.files.keys().filter(|p| p.parent() == Some(path));
        let dirs = s.dirs.iter().filter(|p| p.parent() == Some(path));
        let mut names: Vec<String> = files
            .chain(dirs)
            .filter_map(|p| p.file_name()?.to_str().map(String::from))
            .collect();
        names.sort();
        Ok(names)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.files
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        if !s.dirs.contains(path) {
            return Err(not_found(path));
        }
        s.files.retain(|p, _| !p.starts_with(path));
        s.durable.retain(|p, _| !p.starts_with(path));
        s.dirs.retain(|p| !p.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        if let Some(i) = s.files.remove(from) {
            s.files.insert(to.to_path_buf(), i);
            return Ok(());
        }
        if s.dirs.contains(from) {
            // Directory renames are taken as durable at once, like directory creation.
            let moved = |p: &Path| to.join(p.strip_prefix(from).unwrap_or(p));
            let st = &mut *s;
            for map in [&mut st.files, &mut st.durable] {
                let keys: Vec<PathBuf> = map
                    .keys()
                    .filter(|p| p.starts_with(from))
                    .cloned()
                    .collect();
                for k in keys {
                    if let Some(v) = map.remove(&k) {
                        map.insert(moved(&k), v);
                    }
                }
            }
            let dirs: Vec<PathBuf> = s
                .dirs
                .iter()
                .filter(|p| p.starts_with(from))
                .cloned()
                .collect();
            for d in dirs {
                s.dirs.remove(&d);
                s.dirs.insert(moved(&d));
            }
            return Ok(());
        }
        Err(not_found(from))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.sync_point()?;
        let mut s = self.state.lock();
        s.durable.retain(|p, _| p.parent() != Some(path));
        let current: Vec<(PathBuf, InodeRef)> = s
            .files
            .iter()
            .filter(|(p, _)| p.parent() == Some(path))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        s.durable.extend(current);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.state.lock();
        s.files.contains_key(path) || s.dirs.contains(path)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut s = self.state.lock();
        if !s.locks.insert(path.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Box::new(MemLock {
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }
}
