//! `results.jsonl`, written as a run goes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use armada_core::wire::JobResult;

use crate::{Error, Result};

/// `results.jsonl`: one JSON line per job, in the order jobs ended.
pub(crate) struct ResultsFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl ResultsFile {
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let error = |source| Error::Results {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(error)?;
        }
        let file = File::create(path).map_err(error)?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        })
    }

    pub(crate) fn write(&mut self, result: &JobResult) -> Result<()> {
        serde_json::to_writer(&mut self.out, result)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|source| Error::Results {
                path: self.path.display().to_string(),
                source,
            })
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|source| Error::Results {
            path: self.path.display().to_string(),
            source,
        })
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        self.flush()
    }
}
