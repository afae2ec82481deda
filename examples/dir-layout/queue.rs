//! The queue's directories in one layout, and what the queue does to them for each message.
//!
//! Each operation repeats the system calls of the queue's own code (`Draft::commit`,
//! `open_own`, `read_envelope`, `take_out` and `Leftover::remove`, the listing's `read_dir`), on
//! directories that are opened once, as the queue opens `env/` and `data/` once. A hashed
//! layout keeps every leaf directory open, which a queue with 256 of each could do too.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use etrnq::queue::QueueId;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, openat, renameat, renameat2};
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::{UnlinkatFlags, linkat, syncfs, unlinkat};

const FANOUT: usize = 16;
pub const LAYOUTS: [Layout; 3] = [Layout::Flat, Layout::Hashed(1), Layout::Hashed(2)];
/// Names linked to one inode, under ext4's limit of 65,000.
const SEED_LINKS: usize = 60_000;
/// A 1 KB message and an envelope of one recipient, as `bench/run` queues them.
const DATA_BYTES: usize = 1024;
const ENV_BYTES: usize = 300;

#[derive(Clone, Copy)]
pub enum Layout {
    Flat,
    Hashed(u32),
}

impl Layout {
    pub fn name(self) -> String {
        match self {
            Layout::Flat => "flat".into(),
            Layout::Hashed(depth) => format!("hashed-{depth}"),
        }
    }

    fn slots(self) -> usize {
        match self {
            Layout::Flat => 1,
            Layout::Hashed(depth) => FANOUT.pow(depth),
        }
    }

    /// The directory an id goes to, as an index into `Tree::dirs`.
    pub fn slot(self, id: &QueueId) -> usize {
        let tail = id.as_str().as_bytes()[10..]
            .iter()
            .fold(0usize, |n, &c| n * 62 + base62(c));
        tail % self.slots()
    }

    /// The path of slot `slot` below `env/` or `data/`: one hex digit a level, the lowest first.
    fn subpath(self, slot: usize) -> PathBuf {
        match self {
            Layout::Flat => PathBuf::new(),
            Layout::Hashed(depth) => (0..depth)
                .map(|level| format!("{:x}", slot / FANOUT.pow(level) % FANOUT))
                .collect(),
        }
    }
}

fn base62(c: u8) -> usize {
    match c {
        b'0'..=b'9' => usize::from(c - b'0'),
        b'A'..=b'Z' => usize::from(c - b'A') + 10,
        _ => usize::from(c.saturating_sub(b'a')) + 36,
    }
}

/// `env/` or `data/` in one layout: every leaf directory, open.
pub struct Tree {
    pub layout: Layout,
    pub paths: Vec<PathBuf>,
    pub dirs: Vec<File>,
}

impl Tree {
    pub fn create(root: &Path, layout: Layout) -> io::Result<Tree> {
        let mut builder = DirBuilder::new();
        builder.mode(0o700).recursive(true);
        let paths: Vec<PathBuf> = (0..layout.slots())
            .map(|slot| root.join(layout.subpath(slot)))
            .collect();
        let mut dirs = Vec::with_capacity(paths.len());
        for path in &paths {
            builder.create(path)?;
            dirs.push(File::open(path)?);
        }
        Ok(Tree {
            layout,
            paths,
            dirs,
        })
    }

    pub fn dir(&self, id: &QueueId) -> &File {
        &self.dirs[self.layout.slot(id)]
    }

    /// Every name in the tree read, as a listing without the index reads `env/` or `data/`.
    pub fn list(&self) -> io::Result<usize> {
        let mut names = 0;
        for path in &self.paths {
            for entry in fs::read_dir(path)? {
                if entry?
                    .file_name()
                    .to_str()
                    .and_then(QueueId::parse)
                    .is_some()
                {
                    names += 1;
                }
            }
        }
        Ok(names)
    }
}

/// A queue directory in one layout: `tmp/`, `env/` and `data/`.
pub struct Queue {
    pub root: PathBuf,
    pub tmp: File,
    pub env: Tree,
    pub data: Tree,
}

impl Queue {
    pub fn create(root: PathBuf, layout: Layout) -> io::Result<Queue> {
        DirBuilder::new().mode(0o700).create(&root)?;
        DirBuilder::new().mode(0o700).create(root.join("tmp"))?;
        Ok(Queue {
            tmp: File::open(root.join("tmp"))?,
            env: Tree::create(&root.join("env"), layout)?,
            data: Tree::create(&root.join("data"), layout)?,
            root,
        })
    }

    /// `Draft::commit`: each file written under `tmp/`, synced, renamed into place without
    /// replacing, and its directory synced; `synced` false leaves out every sync.
    pub fn commit(&self, id: &QueueId, synced: bool) -> io::Result<()> {
        let files = [
            (&self.data, "data", DATA_BYTES),
            (&self.env, "env", ENV_BYTES),
        ];
        for (tree, suffix, size) in files {
            let tmp_name = format!("{id}.{suffix}");
            let mut file = create(&self.tmp, &tmp_name)?;
            file.write_all(&[b'x'; DATA_BYTES][..size])?;
            if synced {
                file.sync_all()?;
            }
            drop(file);
            let dir = tree.dir(id);
            renameat2(
                &self.tmp,
                tmp_name.as_str(),
                dir,
                id.as_str(),
                RenameFlags::RENAME_NOREPLACE,
            )?;
            if synced {
                dir.sync_all()?;
            }
        }
        Ok(())
    }

    /// `open_own`: the envelope opened without following a link, examined, closed. False when
    /// there is no such message.
    pub fn look_up(&self, id: &QueueId) -> io::Result<bool> {
        match open_own(self.env.dir(id), id) {
            Ok(file) => file.metadata().map(|_| true),
            Err(nix::Error::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The envelope read whole, as `read_envelope` reads it.
    pub fn read(&self, id: &QueueId, buffer: &mut Vec<u8>) -> io::Result<usize> {
        let mut file = open_own(self.env.dir(id), id)?;
        let size = file.metadata()?.len() as usize;
        buffer.clear();
        buffer.reserve(size + 1);
        file.read_to_end(buffer)
    }

    /// `take_out` and `Leftover::remove`: the envelope examined and renamed to `tmp/ID.gone`,
    /// then it and the data unlinked.
    pub fn deliver(&self, id: &QueueId) -> io::Result<()> {
        let env = self.env.dir(id);
        fstatat(env, id.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let gone = format!("{id}.gone");
        renameat(env, id.as_str(), &self.tmp, gone.as_str())?;
        unlinkat(&self.tmp, gone.as_str(), UnlinkatFlags::NoRemoveDir)?;
        unlinkat(self.data.dir(id), id.as_str(), UnlinkatFlags::NoRemoveDir)?;
        Ok(())
    }

    /// What the drain does for each message it empties the queue of: two names unlinked.
    pub fn unlink(&self, id: &QueueId) -> io::Result<()> {
        for tree in [&self.env, &self.data] {
            unlinkat(tree.dir(id), id.as_str(), UnlinkatFlags::NoRemoveDir)?;
        }
        Ok(())
    }

    pub fn list(&self) -> io::Result<usize> {
        Ok(self.env.list()? + self.data.list()?)
    }

    pub fn layout(&self) -> Layout {
        self.env.layout
    }

    /// Puts an envelope and a data name in place for each id: hard links to one empty file in
    /// `tmp/` per `SEED_LINKS` names. A directory entry costs the directory what a new file
    /// costs it; the inodes, which cost the same in every layout, are left to the commits.
    pub fn fill(&self, ids: &[QueueId]) -> io::Result<()> {
        for (n, chunk) in ids.chunks(SEED_LINKS / 2).enumerate() {
            let seed = format!("seed{n}");
            drop(create(&self.tmp, &seed)?);
            for id in chunk {
                for tree in [&self.env, &self.data] {
                    linkat(
                        &self.tmp,
                        seed.as_str(),
                        tree.dir(id),
                        id.as_str(),
                        AtFlags::empty(),
                    )?;
                }
            }
            unlinkat(&self.tmp, seed.as_str(), UnlinkatFlags::NoRemoveDir)?;
        }
        Ok(())
    }

    /// A name added to `env/` and removed again: the directory's part of a commit and a
    /// delivery, without the inode's.
    pub fn add_and_remove(&self, seed: &str, id: &QueueId) -> io::Result<()> {
        let dir = self.env.dir(id);
        linkat(&self.tmp, seed, dir, id.as_str(), AtFlags::empty())?;
        unlinkat(dir, id.as_str(), UnlinkatFlags::NoRemoveDir)?;
        Ok(())
    }

    /// Writes out the file system's journal, and with it whatever the disk is owed for blocks
    /// freed since (a disk mounted with `discard` is told of each).
    pub fn settle(&self) -> io::Result<()> {
        Ok(syncfs(&self.tmp)?)
    }
}

pub fn create(dir: &File, name: &str) -> io::Result<File> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(File::from(openat(
        dir,
        name,
        flags,
        Mode::from_bits_truncate(0o600),
    )?))
}

fn open_own(dir: &File, id: &QueueId) -> nix::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    openat(dir, id.as_str(), flags, Mode::empty()).map(File::from)
}
