//! `walnut`: inspect, verify and maintain a walnut store from the command line (raft-engine's
//! `ctl`, SQLite's shell). Works on a store directory (the native and Node layout: files named
//! `NNNNNNNN.wal`) or on a single log file.
//!
//! Read-only commands (`inspect`, `verify`, `ls`, `get`, `cat-log`) never write: recovery runs
//! on a copy-on-write view, so a damaged store is examined as it is. `compact` and `checkpoint`
//! take the directory's lock and write.

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    use clap::{Parser, Subcommand};
    use serde_json::{json, Value};
    use walnut::format::{
        loc, record_crc, FileHeader, Kind, RecordHeader, CHECKPOINT_MAGIC, FILE_HEADER_LEN, MAGIC, RECORD_HEADER_LEN,
    };
    use walnut::storage::overlay::{read_only_dir, OverlayFile};
    use walnut::storage::{read_exact_at, Storage, Volume};
    use walnut::{DirVolume, Error, KeyRange, Options, Store};

    /// Exit codes, documented in `--help`.
    const EXIT_DAMAGED: u8 = 1;
    const EXIT_STORE: u8 = 3;
    const EXIT_NOT_FOUND: u8 = 4;

    #[derive(Parser)]
    #[command(
        name = "walnut",
        version,
        about = "Inspect, verify and maintain a walnut store (a directory of NNNNNNNN.wal files, or one log file)",
        after_help = "Exit codes: 0 success; 1 verify found damage (recovery would discard or cut something); \
                      2 bad usage; 3 the store could not be opened or read; 4 the key (or table) does not exist."
    )]
    struct Cli {
        /// Print JSON instead of aligned text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        /// Segments, checkpoints, tables with their sequence marks, keys, live and dead bytes, format version.
        Inspect { path: PathBuf },
        /// Runs recovery read-only and reports what it would keep and discard, and why. Exit 0 only if nothing would be discarded.
        Verify { path: PathBuf },
        /// Lists keys with their value sizes, in bytewise order.
        Ls {
            path: PathBuf,
            /// Only keys starting with this (UTF-8).
            #[arg(long)]
            prefix: Option<String>,
            /// A named table instead of the store's own keys.
            #[arg(long)]
            table: Option<String>,
            /// At most this many keys.
            #[arg(long)]
            limit: Option<usize>,
            /// Descending order.
            #[arg(long)]
            reverse: bool,
        },
        /// Writes a value to stdout (or to a file with -o), streamed chunk by chunk.
        Get {
            path: PathBuf,
            /// The key (UTF-8; `0x` followed by hex for bytes).
            key: String,
            #[arg(long)]
            table: Option<String>,
            #[arg(short, long)]
            output: Option<PathBuf>,
        },
        /// The log's records, one per line: location, LSN, txn, kind, key, link, length, CRC.
        CatLog { path: PathBuf },
        /// Writes a consistent snapshot of the store as one `.walnut` file (a compacted walnut log: every table, value, queue and change-feed entry, sequence marks and commit ids).
        Export {
            path: PathBuf,
            #[arg(short, long)]
            output: PathBuf,
        },
        /// Restores an export into a new store directory, after checking it whole (a cut or damaged file is refused, naming the offset, and nothing is created).
        Import { file: PathBuf, dir: PathBuf },
        /// Reclaims dead space now (takes the directory's lock).
        Compact { path: PathBuf },
        /// Writes a checkpoint now (takes the directory's lock).
        Checkpoint { path: PathBuf },
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        match run(&cli) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("walnut: {e}");
                ExitCode::from(match e {
                    Failure::NotFound(_) => EXIT_NOT_FOUND,
                    _ => EXIT_STORE,
                })
            }
        }
    }

    #[derive(Debug)]
    enum Failure {
        Store(Error),
        NotStore(PathBuf),
        NotFound(String),
        Io(std::io::Error),
    }

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Failure::Store(e) => write!(f, "{e}"),
                Failure::NotFound(what) => write!(f, "{what}"),
                Failure::NotStore(p) => write!(f, "{} holds no walnut store (no log file)", p.display()),
                Failure::Io(e) => write!(f, "{e}"),
            }
        }
    }

    impl From<Error> for Failure {
        fn from(e: Error) -> Self {
            Failure::Store(e)
        }
    }

    impl From<std::io::Error> for Failure {
        fn from(e: std::io::Error) -> Self {
            Failure::Io(e)
        }
    }

    /// A store opened read-only on a directory or a single file.
    enum View {
        Dir(Store<walnut::storage::MapVolume<OverlayFile>>),
        File(Store<OverlayFile>),
    }

    macro_rules! with {
        ($view:expr, |$s:ident| $e:expr) => {
            match $view {
                View::Dir($s) => $e,
                View::File($s) => $e,
            }
        };
    }

    fn open_view(path: &Path) -> Result<View, Failure> {
        // Commit ids are all kept in the view: it never trims what the store remembers.
        let opts = Options { id_retention: walnut::store::MAX_ID_RETENTION, ..Options::default() };
        if path.is_dir() {
            let v = read_only_dir(path)?;
            if v.ids().is_empty() {
                return Err(Failure::NotStore(path.to_path_buf()));
            }
            Ok(View::Dir(Store::open(v, opts)?))
        } else {
            let f = OverlayFile::open(path)?;
            let mut magic = [0u8; 8];
            if !read_exact_at(&f, &mut magic, 0)? || magic != MAGIC {
                return Err(Failure::NotStore(path.to_path_buf()));
            }
            Ok(View::File(Store::open(f, opts)?))
        }
    }

    fn run(cli: &Cli) -> Result<u8, Failure> {
        let mut out = std::io::stdout().lock();
        match &cli.command {
            Command::Inspect { path } => inspect(path, cli.json, &mut out),
            Command::Verify { path } => verify(path, cli.json, &mut out),
            Command::Ls { path, prefix, table, limit, reverse } => {
                let view = open_view(path)?;
                let tid = table_id(&view, table.as_deref())?;
                let range = KeyRange {
                    prefix: prefix.as_ref().map(|p| p.as_bytes().to_vec()),
                    limit: *limit,
                    reverse: *reverse,
                    ..KeyRange::default()
                };
                let keys = with!(&view, |s| s.keys_in(tid, &range))?;
                if cli.json {
                    let rows: Vec<Value> = keys
                        .iter()
                        .map(|k| json!({ "key": show_key(&k.key, k.string_key), "string": k.string_key, "size": k.size }))
                        .collect();
                    writeln!(out, "{}", Value::Array(rows))?;
                } else {
                    let shown: Vec<String> = keys.iter().map(|k| show_key(&k.key, k.string_key)).collect();
                    let width = shown.iter().map(String::len).max().unwrap_or(0);
                    for (k, s) in keys.iter().zip(&shown) {
                        writeln!(out, "{s:<width$}  {:>12}", k.size)?;
                    }
                }
                Ok(0)
            }
            Command::Get { path, key, table, output } => {
                let view = open_view(path)?;
                let tid = table_id(&view, table.as_deref())?;
                let k = parse_key(key)?;
                let Some(entry) = with!(&view, |s| s.entry_in(tid, &k))? else {
                    return Err(Failure::NotFound(format!("no key {key}")));
                };
                let mut sink: Box<dyn Write> = match output {
                    Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
                    None => Box::new(std::io::stdout().lock()),
                };
                let mut buf = Vec::new();
                for chunk in &entry.chunks {
                    with!(&view, |s| s.read_chunk(chunk, &mut buf))?;
                    sink.write_all(&buf)?;
                }
                sink.flush()?;
                Ok(0)
            }
            Command::CatLog { path } => cat_log(path, cli.json, &mut out),
            Command::Export { path, output } => {
                if path.is_dir() && inside(output, path) {
                    return Err(Failure::Store(Error::invalid("output", "must not lie inside the store directory")));
                }
                // A directory is exported under its lock (a store another process writes could
                // look torn): the export reads through a store opened as any opener would.
                let n = if path.is_dir() {
                    open_view(path)?; // refuses a directory without a store before locking it
                    let mut s = Store::open(
                        DirVolume::open(path)?,
                        Options { id_retention: walnut::store::MAX_ID_RETENTION, ..Options::default() },
                    )?;
                    let n = export(&mut s, output);
                    let _ = s.close();
                    n?
                } else {
                    match open_view(path)? {
                        View::Dir(mut s) => export(&mut s, output)?,
                        View::File(mut s) => export(&mut s, output)?,
                    }
                };
                report(
                    &mut out,
                    cli.json,
                    json!({ "values": n.0, "bytes": n.1 }),
                    &[("values", n.0.to_string()), ("bytes", n.1.to_string())],
                )?;
                Ok(0)
            }
            Command::Import { file, dir } => {
                let (values, bytes) = import(file, dir)?;
                report(
                    &mut out,
                    cli.json,
                    json!({ "values": values, "bytes": bytes, "dir": dir }),
                    &[
                        ("values", values.to_string()),
                        ("bytes", bytes.to_string()),
                        ("into", dir.display().to_string()),
                    ],
                )?;
                Ok(0)
            }
            Command::Compact { path } => {
                let mut s = open_writable(path)?;
                let before = s.stats();
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_message("compacting");
                let rounds = s.compact()?;
                bar.finish_and_clear();
                let after = s.stats();
                s.close()?;
                report(
                    &mut out,
                    cli.json,
                    json!({ "rounds": rounds, "log_bytes_before": before.log_bytes, "log_bytes_after": after.log_bytes,
                            "segments_before": before.segments, "segments_after": after.segments }),
                    &[
                        ("rounds", rounds.to_string()),
                        ("log bytes", format!("{} -> {}", before.log_bytes, after.log_bytes)),
                        ("segments", format!("{} -> {}", before.segments, after.segments)),
                    ],
                )?;
                Ok(0)
            }
            Command::Checkpoint { path } => {
                let mut s = open_writable(path)?;
                s.checkpoint()?;
                let st = s.stats();
                s.close()?;
                report(
                    &mut out,
                    cli.json,
                    json!({ "checkpoint_lsn": st.last_checkpoint_lsn, "segments": st.segments }),
                    &[("checkpoint LSN", st.last_checkpoint_lsn.to_string()), ("segments", st.segments.to_string())],
                )?;
                Ok(0)
            }
        }
    }

    /// Whether `p` lies inside directory `dir` (compared as canonical paths).
    fn inside(p: &Path, dir: &Path) -> bool {
        let parent = p.parent().filter(|x| !x.as_os_str().is_empty()).unwrap_or(Path::new("."));
        match (parent.canonicalize(), dir.canonicalize()) {
            (Ok(a), Ok(b)) => a.starts_with(b),
            _ => false,
        }
    }

    /// A name beside `target` that no one else uses: `.<name>.<what>-<pid>-<nanos>`.
    fn beside(target: &Path, what: &str) -> Result<PathBuf, Failure> {
        let name = target.file_name().filter(|n| *n != "." && *n != "..").ok_or_else(|| {
            Failure::Store(Error::invalid("path", format!("{} names no file or directory", target.display())))
        })?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let parent = target.parent().filter(|x| !x.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Ok(parent.join(format!(".{}.{what}-{}-{nanos}", name.to_string_lossy(), std::process::id())))
    }

    fn sync_dir(dir: &Path) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }

    /// Writes the export of `s` to a new temporary file beside `output`, flushes it, then
    /// renames it into place: `output` is whole or absent. Returns (values, bytes).
    fn export<V: Volume>(s: &mut Store<V>, output: &Path) -> Result<(usize, u64), Failure> {
        let tmp = beside(output, "export")?;
        let mut e = walnut::export::Export::begin(s)?;
        let written = (|| -> Result<(), Failure> {
            let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            let mut f = std::io::BufWriter::new(file);
            let bar = indicatif::ProgressBar::new(e.progress().1 as u64);
            while let Some(piece) = e.next(s)? {
                f.write_all(&piece)?;
                bar.set_position(e.progress().0 as u64);
            }
            bar.finish_and_clear();
            let f = f.into_inner().map_err(|e| Failure::Io(e.into_error()))?;
            f.sync_all()?;
            Ok(())
        })();
        let n = (e.progress().1, e.written());
        e.finish(s);
        if let Err(err) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
        std::fs::rename(&tmp, output)?;
        sync_dir(output.parent().filter(|x| !x.as_os_str().is_empty()).unwrap_or(Path::new(".")));
        Ok(n)
    }

    /// Copies `file` into a new directory beside `dir`, checks the copy whole, opens it once as
    /// a store directory (recovery writes its first checkpoint), and renames it into place:
    /// `dir` is whole or absent, and nothing is left behind when the file is refused.
    fn import(file: &Path, dir: &Path) -> Result<(u64, u64), Failure> {
        if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
            return Err(Failure::Store(Error::invalid("dir", format!("{} exists and is not empty", dir.display()))));
        }
        let tmp = beside(dir, "import")?;
        std::fs::create_dir(&tmp)?; // new: never someone else's
        let result = (|| -> Result<(u64, u64), Failure> {
            let seg = tmp.join("00000000.wal");
            let bytes = std::fs::copy(file, &seg)?;
            std::fs::File::open(&seg)?.sync_all()?;
            let checked = walnut::export::verify_export(OverlayFile::open(&seg)?)?;
            let values = checked.stats().keys;
            drop(checked);
            let opts = Options { id_retention: walnut::store::MAX_ID_RETENTION, ..Options::default() };
            let mut s = Store::open(DirVolume::open(&tmp)?, opts)?;
            s.close()?;
            drop(s);
            let _ = std::fs::remove_file(tmp.join(walnut::storage::volume::DirLock::FILE));
            sync_dir(&tmp);
            Ok((values, bytes))
        })();
        let n = match result {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        if dir.exists() {
            std::fs::remove_dir(dir)?;
        }
        std::fs::rename(&tmp, dir)?;
        sync_dir(dir.parent().filter(|x| !x.as_os_str().is_empty()).unwrap_or(Path::new(".")));
        Ok(n)
    }

    fn open_writable(path: &Path) -> Result<Store<DirVolume>, Failure> {
        if !path.is_dir() {
            return Err(Failure::Store(Error::invalid("path", "compact and checkpoint need a store directory")));
        }
        Ok(Store::open(DirVolume::open(path)?, Options::default())?)
    }

    fn table_id(view: &View, table: Option<&str>) -> Result<u32, Failure> {
        match table {
            None => Ok(0),
            Some(name) => with!(view, |s| s.table(name))
                .map(|t| t.id)
                .ok_or_else(|| Failure::NotFound(format!("no table {name:?}"))),
        }
    }

    fn parse_key(key: &str) -> Result<Vec<u8>, Failure> {
        match key.strip_prefix("0x") {
            Some(hex) if hex.len() % 2 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok((0..hex.len()).step_by(2).filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect())
            }
            _ => Ok(key.as_bytes().to_vec()),
        }
    }

    /// A key as text if it is printable UTF-8 (and does not itself start with `0x`), else
    /// `0x` and hex (`--json` also says whether it was put as a string). `get` takes either.
    fn show_key(key: &[u8], _string: bool) -> String {
        match std::str::from_utf8(key) {
            Ok(s) if !s.is_empty() && !s.starts_with("0x") && !s.chars().any(char::is_control) => s.to_string(),
            _ => format!("0x{}", key.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        }
    }

    fn report(out: &mut impl Write, json: bool, value: Value, rows: &[(&str, String)]) -> std::io::Result<()> {
        if json {
            writeln!(out, "{value}")
        } else {
            let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            rows.iter().try_for_each(|(k, v)| writeln!(out, "{k:<width$}  {v}"))
        }
    }

    /// The files of a store: (file id, bytes-reader) with their kind and header.
    fn files(path: &Path) -> Result<Vec<(u32, OverlayFile)>, Failure> {
        if path.is_dir() {
            Ok(read_only_dir(path)?.into_files().into_iter().collect())
        } else {
            Ok(vec![(0, OverlayFile::open(path)?)])
        }
    }

    fn inspect(path: &Path, json_out: bool, out: &mut impl Write) -> Result<u8, Failure> {
        let mut segments = Vec::new();
        let mut checkpoints = Vec::new();
        let mut versions = std::collections::BTreeSet::new();
        for (id, f) in files(path)? {
            let mut head = [0u8; 128];
            let n = f.read_at(&mut head, 0)?;
            let size = f.size()?;
            if head.starts_with(&MAGIC) && n >= FILE_HEADER_LEN {
                let version = u16::from_le_bytes([head[8], head[9]]);
                versions.insert(version);
                let mut h = [0u8; FILE_HEADER_LEN];
                h.copy_from_slice(&head[..FILE_HEADER_LEN]);
                match FileHeader::decode(&h) {
                    Ok(fh) => segments.push(json!({ "file": id, "segment": fh.segment, "base_lsn": fh.base_lsn, "bytes": size, "version": version })),
                    Err(e) => segments.push(json!({ "file": id, "bytes": size, "error": format!("{e:?}") })),
                }
            } else if head.starts_with(&CHECKPOINT_MAGIC) {
                match walnut::format::CheckpointHeader::decode(&head[..n]) {
                    Some(c) => checkpoints.push(json!({ "file": id, "seq": c.seq, "version": c.version,
                        "replay_from": location(c.replay_from), "replay_lsn": c.replay_lsn, "index_lsn": c.index_lsn,
                        "entries": c.entries, "ids": c.ids, "bytes": size })),
                    None => checkpoints.push(json!({ "file": id, "bytes": size, "error": "invalid header" })),
                }
            } else {
                segments.push(json!({ "file": id, "bytes": size, "error": "not a walnut file" }));
            }
        }
        let view = open_view(path)?;
        let (stats, tables, report) = with!(&view, |s| (s.stats(), s.tables(), s.recovery().clone()));
        let tables: Vec<Value> = tables
            .iter()
            .map(|t| json!({ "id": t.id, "name": t.name, "last_seq": t.last_seq, "flushed_seq": t.flushed_seq, "deleted_upto": t.deleted_upto }))
            .collect();
        let dead = stats.log_bytes.saturating_sub(stats.live_bytes);
        let value = json!({
            "format_versions": versions.iter().collect::<Vec<_>>(),
            "segments": segments,
            "checkpoints": checkpoints,
            "checkpoint_used": report.checkpoint.map(|(seq, lsn)| json!({ "seq": seq, "replay_lsn": lsn })),
            "tables": tables,
            "keys": stats.keys,
            "live_bytes": stats.live_bytes,
            "log_bytes": stats.log_bytes,
            "dead_ratio": stats.dead_ratio,
            "next_lsn": stats.next_lsn,
        });
        if json_out {
            writeln!(out, "{value}")?;
            return Ok(0);
        }
        writeln!(out, "format version(s)  {}", versions.iter().map(u16::to_string).collect::<Vec<_>>().join(", "))?;
        writeln!(out, "keys               {}", stats.keys)?;
        writeln!(out, "live bytes         {}", stats.live_bytes)?;
        writeln!(
            out,
            "log bytes          {} ({} not live, dead ratio {:.3})",
            stats.log_bytes, dead, stats.dead_ratio
        )?;
        writeln!(out, "next LSN           {}", stats.next_lsn)?;
        match report.checkpoint {
            Some((seq, lsn)) => writeln!(out, "opened from        checkpoint {seq} (replay from LSN {lsn})")?,
            None => writeln!(out, "opened from        a full scan (no usable checkpoint)")?,
        }
        writeln!(out, "\nsegments\n  {:>6}  {:>8}  {:>12}  {:>12}", "file", "segment", "base LSN", "bytes")?;
        for s in &segments {
            match s.get("error") {
                Some(e) => writeln!(
                    out,
                    "  {:>6}  {:>8}  {:>12}  {:>12}  {}",
                    text(&s["file"]),
                    "-",
                    "-",
                    text(&s["bytes"]),
                    e.as_str().unwrap_or("")
                )?,
                None => writeln!(
                    out,
                    "  {:>6}  {:>8}  {:>12}  {:>12}",
                    text(&s["file"]),
                    text(&s["segment"]),
                    text(&s["base_lsn"]),
                    text(&s["bytes"])
                )?,
            }
        }
        writeln!(
            out,
            "\ncheckpoints\n  {:>6}  {:>5}  {:>12}  {:>12}  {:>8}  {:>6}",
            "file", "seq", "replay LSN", "index LSN", "entries", "ids"
        )?;
        for c in &checkpoints {
            match c.get("error") {
                Some(e) => writeln!(out, "  {:>6}  {}", text(&c["file"]), e.as_str().unwrap_or(""))?,
                None => writeln!(
                    out,
                    "  {:>6}  {:>5}  {:>12}  {:>12}  {:>8}  {:>6}",
                    text(&c["file"]),
                    text(&c["seq"]),
                    text(&c["replay_lsn"]),
                    text(&c["index_lsn"]),
                    text(&c["entries"]),
                    text(&c["ids"])
                )?,
            }
        }
        writeln!(
            out,
            "\ntables\n  {:>4}  {:<20}  {:>10}  {:>10}  {:>12}",
            "id", "name", "last seq", "flushed", "deleted to"
        )?;
        for t in &tables {
            let name = t["name"].as_str().unwrap_or("");
            writeln!(
                out,
                "  {:>4}  {:<20}  {:>10}  {:>10}  {:>12}",
                text(&t["id"]),
                if name.is_empty() { "(default)" } else { name },
                text(&t["last_seq"]),
                text(&t["flushed_seq"]),
                text(&t["deleted_upto"])
            )?;
        }
        Ok(0)
    }

    /// A JSON value as text for the aligned output (widths apply to strings only).
    fn text(x: &Value) -> String {
        match x {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    fn location(l: u64) -> Value {
        json!({ "segment": walnut::format::loc_segment(l), "offset": walnut::format::loc_offset(l) })
    }

    fn verify(path: &Path, json_out: bool, out: &mut impl Write) -> Result<u8, Failure> {
        let view = open_view(path)?;
        let r = with!(&view, |s| s.recovery().clone());
        let discarded: Vec<Value> =
            r.discarded.iter().map(|d| json!({ "txn": d.txn, "lsn": d.lsn, "reason": d.reason.to_string() })).collect();
        // Recovery reads what lies after the checkpoint's replay point; every live value is
        // read too (each record's CRC checked), wherever it lies.
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message("reading every value");
        let values = with!(&view, |s| s.check_values(100))?;
        bar.finish_and_clear();
        let unreadable: Vec<Value> =
            values.failures.iter().map(|(k, e)| json!({ "key": show_key(k, false), "error": e.to_string() })).collect();
        let damaged =
            r.discarded_total > 0 || r.bytes_truncated > 0 || !r.checkpoints_rejected.is_empty() || values.failed > 0;
        if json_out {
            writeln!(
                out,
                "{}",
                json!({ "ok": !damaged, "committed": r.committed, "records": r.records, "discarded_total": r.discarded_total,
                        "discarded": discarded, "bytes_truncated": r.bytes_truncated,
                        "truncated_at": r.truncated_at.map(location), "tail_reason": r.tail_reason,
                        "checkpoint": r.checkpoint.map(|(seq, lsn)| json!({ "seq": seq, "replay_lsn": lsn })),
                        "checkpoints_rejected": r.checkpoints_rejected, "segments_released": r.segments_released,
                        "values_read": values.values, "value_bytes_read": values.bytes,
                        "values_unreadable": values.failed, "unreadable": unreadable })
            )?;
        } else {
            writeln!(out, "records read          {}", r.records)?;
            writeln!(out, "transactions applied  {}", r.committed)?;
            match r.checkpoint {
                Some((seq, lsn)) => writeln!(out, "checkpoint            {seq} (replay from LSN {lsn})")?,
                None => writeln!(out, "checkpoint            none usable: a full scan")?,
            }
            for why in &r.checkpoints_rejected {
                writeln!(out, "checkpoint rejected   {why}")?;
            }
            if r.bytes_truncated > 0 {
                let at = r.truncated_at.map_or("?".to_string(), |l| {
                    format!("segment {}, offset {}", walnut::format::loc_segment(l), walnut::format::loc_offset(l))
                });
                writeln!(
                    out,
                    "would cut             {} bytes at {at}: {}",
                    r.bytes_truncated,
                    r.tail_reason.as_deref().unwrap_or("")
                )?;
            }
            for d in &r.discarded {
                writeln!(out, "would discard         txn {} (LSN {}): {}", d.txn, d.lsn, d.reason)?;
            }
            writeln!(out, "values read           {} ({} bytes)", values.values, values.bytes)?;
            for (k, e) in &values.failures {
                writeln!(out, "unreadable value      {}: {e}", show_key(k, false))?;
            }
            if r.discarded_total > r.discarded.len() as u64 {
                writeln!(out, "                      ... {} more", r.discarded_total - r.discarded.len() as u64)?;
            }
            writeln!(
                out,
                "{}",
                if damaged {
                    "DAMAGED: recovery would discard the above, or values cannot be read"
                } else {
                    "OK: nothing would be discarded, every value reads"
                }
            )?;
        }
        Ok(if damaged { EXIT_DAMAGED } else { 0 })
    }

    /// The log's records in log order: every segment (by number), from its header to its first
    /// invalid record.
    fn cat_log(path: &Path, json_out: bool, out: &mut impl Write) -> Result<u8, Failure> {
        let mut segs: Vec<(u32, u64, OverlayFile)> = Vec::new();
        for (_, f) in files(path)? {
            let mut h = [0u8; FILE_HEADER_LEN];
            if !read_exact_at(&f, &mut h, 0)? || !h.starts_with(&MAGIC) {
                continue;
            }
            if let Ok(fh) = FileHeader::decode(&h) {
                segs.push((fh.segment, fh.base_lsn, f));
            }
        }
        segs.sort_by_key(|s| s.0);
        if !json_out {
            writeln!(
                out,
                "{:>8} {:>9} {:>8} {:>8} {:<10} {:>5} {:>14} {:>10}  {:<5} key",
                "segment", "offset", "lsn", "txn", "kind", "flags", "prev", "len", "crc"
            )?;
        }
        for (seg, _, f) in &segs {
            let size = f.size()?;
            let mut at = FILE_HEADER_LEN as u64;
            while at + RECORD_HEADER_LEN as u64 <= size {
                let mut hb = [0u8; RECORD_HEADER_LEN];
                if !read_exact_at(f, &mut hb, at)? {
                    break;
                }
                let h = match RecordHeader::decode(&hb) {
                    Ok(h) => h,
                    Err(e) => {
                        if hb.iter().any(|&b| b != 0) {
                            line(out, json_out, json!({ "segment": seg, "offset": at, "invalid": format!("{e:?}") }))?;
                        }
                        break;
                    }
                };
                let len = u64::from(h.len);
                if at + RECORD_HEADER_LEN as u64 + len > size {
                    line(
                        out,
                        json_out,
                        json!({ "segment": seg, "offset": at, "invalid": "record runs past the file" }),
                    )?;
                    break;
                }
                let mut payload = vec![0u8; usize::try_from(len).unwrap_or(0)];
                read_exact_at(f, &mut payload, at + RECORD_HEADER_LEN as u64)?;
                let mut pcrc = crc32fast::Hasher::new();
                pcrc.update(&payload);
                let crc_ok = record_crc(&hb, &pcrc) == h.crc;
                let key = record_key(&h, &payload);
                let prev = if h.prev == 0 {
                    "-".to_string()
                } else {
                    format!("{}:{}", walnut::format::loc_segment(h.prev), walnut::format::loc_offset(h.prev))
                };
                if json_out {
                    line(
                        out,
                        true,
                        json!({ "segment": seg, "offset": at, "location": loc(*seg, at), "lsn": h.lsn, "txn": h.txn,
                                "kind": kind_name(h.kind), "flags": h.flags, "prev": h.prev, "len": h.len, "crc_ok": crc_ok, "key": key }),
                    )?;
                } else {
                    writeln!(
                        out,
                        "{seg:>8} {at:>9} {:>8} {:>8} {:<10} {:>#5x} {prev:>14} {:>10}  {:<5} {}",
                        h.lsn,
                        h.txn,
                        kind_name(h.kind),
                        h.flags,
                        h.len,
                        if crc_ok { "ok" } else { "BAD" },
                        key.unwrap_or_default()
                    )?;
                }
                if !crc_ok {
                    break;
                }
                at += RECORD_HEADER_LEN as u64 + len;
            }
        }
        Ok(0)
    }

    fn line(out: &mut impl Write, json_out: bool, v: Value) -> std::io::Result<()> {
        if json_out {
            writeln!(out, "{v}")
        } else {
            writeln!(
                out,
                "{:>8} {:>9} {}",
                text(&v["segment"]),
                text(&v["offset"]),
                v["invalid"].as_str().unwrap_or("")
            )
        }
    }

    fn kind_name(k: Kind) -> &'static str {
        match k {
            Kind::Begin => "BEGIN",
            Kind::Put => "PUT",
            Kind::Chunk => "CHUNK",
            Kind::Delete => "DELETE",
            Kind::Commit => "COMMIT",
            Kind::Abort => "ABORT",
            Kind::PutOne => "PUT_ONE",
            Kind::DeleteOne => "DELETE_ONE",
            Kind::Table => "TABLE",
            Kind::Rollback => "ROLLBACK",
        }
    }

    /// The key a record names (PUT, DELETE, PUT_ONE, DELETE_ONE), as text or hex.
    fn record_key(h: &RecordHeader, payload: &[u8]) -> Option<String> {
        let raw = match h.kind {
            Kind::Put | Kind::Delete => Some(payload),
            Kind::PutOne => walnut::format::split_seq(h.flags, payload)
                .and_then(|(_, rest)| walnut::format::split_put_one(rest))
                .map(|(k, _)| k),
            Kind::DeleteOne => walnut::format::split_seq(h.flags, payload).map(|(_, k)| k),
            _ => None,
        }?;
        // A table's key, queue entry or feed entry: named by its table (format v5 key space).
        let ik = walnut::format::ikey_from_record(h.flags, raw)?;
        let (table, ns, rest) = walnut::format::split_ikey(&ik);
        if table == 0 && ns == walnut::format::NS_KEYS {
            return Some(show_key(rest, true));
        }
        Some(match ns {
            walnut::format::NS_KEYS => format!("[table {table}] {}", show_key(rest, true)),
            walnut::format::NS_QUEUE => format!("[table {table} queue]"),
            _ => format!("[table {table} ns {ns}] {}", show_key(rest, false)),
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
