//! A private PostgreSQL server started from the installed server binaries, for tests and
//! for the CLI when no `DATABASE_URL` is given.
//!
//! The server lives in a data folder of its own, listens on 127.0.0.1 on a free port, and is
//! shared by every process that asks for the same folder (a lock file serializes the start).
//! When this process runs as root, the server runs as the `postgres` user, since PostgreSQL
//! refuses to run as root.

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Why a private server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalPostgresError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb and pg_ctl via PG_BINDIR, `pg_config --bindir`, \
         /usr/lib/postgresql/*/bin and PATH); install them (Debian/Ubuntu: `apt-get install postgresql`) \
         or set DATABASE_URL to a running server"
    )]
    BinariesNotFound,
    #[error("{command} failed: {detail}")]
    CommandFailed { command: String, detail: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalPostgresError {
    let context = context.into();
    move |source| LocalPostgresError::Io { context, source }
}

/// A running private server.
#[derive(Debug, Clone)]
pub struct LocalPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    run_as_postgres: bool,
    started_here: bool,
}

impl LocalPostgres {
    /// Starts the server of `data_dir` (creating it with initdb the first time), or joins it
    /// when it runs already. Blocking: call it from a blocking context.
    pub fn ensure_running(data_dir: &Path) -> Result<Self, LocalPostgresError> {
        let bin_dir = find_bin_dir()?;
        let parent = data_dir.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(parent).map_err(io_error(format!("creating {}", parent.display())))?;
        let lock_path = data_dir.with_extension("lock");
        let lock = File::create(&lock_path).map_err(io_error(format!("creating {}", lock_path.display())))?;
        lock.lock().map_err(io_error(format!("locking {}", lock_path.display())))?;
        let mut server = LocalPostgres {
            bin_dir,
            data_dir: data_dir.to_path_buf(),
            port: 0,
            run_as_postgres: is_root(),
            started_here: false,
        };
        if !data_dir.join("PG_VERSION").exists() {
            server.initdb()?;
        }
        match server.running_port() {
            Some(port) => server.port = port,
            None => {
                server.start()?;
                server.started_here = true;
            }
        }
        drop(lock);
        Ok(server)
    }

    /// A connection URL for `database` as the superuser `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// True when this call started the server (false when it joined a running one).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server (fast shutdown: running transactions are rolled back).
    pub fn stop(&self) -> Result<(), LocalPostgresError> {
        let data_dir = self.data_dir.to_string_lossy().into_owned();
        self.run("pg_ctl", &["stop", "-w", "-m", "fast", "-D", &data_dir])?;
        Ok(())
    }

    fn initdb(&self) -> Result<(), LocalPostgresError> {
        fs::create_dir_all(&self.data_dir).map_err(io_error(format!("creating {}", self.data_dir.display())))?;
        if self.run_as_postgres {
            let data_dir = self.data_dir.to_string_lossy().into_owned();
            run_checked(Command::new("chown").args(["-R", "postgres:postgres", &data_dir]), "chown")?;
        }
        let data_dir = self.data_dir.to_string_lossy().into_owned();
        self.run(
            "initdb",
            &["-D", &data_dir, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions"],
        )?;
        Ok(())
    }

    fn start(&mut self) -> Result<(), LocalPostgresError> {
        let port = free_port()?;
        let data_dir = self.data_dir.to_string_lossy().into_owned();
        let log_file = self.data_dir.join("server.log").to_string_lossy().into_owned();
        // The socket goes into the data folder, so no system folder is needed.
        let options = format!("-p {port} -c listen_addresses=127.0.0.1 -k {data_dir} -c max_connections=200");
        self.run("pg_ctl", &["start", "-w", "-t", "60", "-D", &data_dir, "-l", &log_file, "-o", &options])?;
        self.port = port;
        Ok(())
    }

    /// The port of the server running on this data folder, if one runs.
    fn running_port(&self) -> Option<u16> {
        let data_dir = self.data_dir.to_string_lossy().into_owned();
        self.run("pg_ctl", &["status", "-D", &data_dir]).ok()?;
        // postmaster.pid: line 4 is the port.
        let pid_file = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, LocalPostgresError> {
        let program_path = self.bin_dir.join(program);
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program_path);
            command
        } else {
            Command::new(&program_path)
        };
        command.args(args).current_dir(std::env::temp_dir());
        run_checked(&mut command, program)
    }
}

fn run_checked(command: &mut Command, name: &str) -> Result<Output, LocalPostgresError> {
    let output = command.output().map_err(io_error(format!("running {name}")))?;
    if !output.status.success() {
        let detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(LocalPostgresError::CommandFailed { command: name.to_owned(), detail });
    }
    Ok(output)
}

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|metadata| metadata.uid() == 0).unwrap_or(false)
}

fn free_port() -> Result<u16, LocalPostgresError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_error("finding a free port"))?;
    Ok(listener.local_addr().map_err(io_error("finding a free port"))?.port())
}

/// The folder holding `initdb` and `pg_ctl`: `PG_BINDIR`, then `pg_config --bindir`, then the
/// newest `/usr/lib/postgresql/N/bin`, then `PATH`.
pub fn find_bin_dir() -> Result<PathBuf, LocalPostgresError> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PG_BINDIR").map(PathBuf::from) {
        return if has_server(&dir) { Ok(dir) } else { Err(LocalPostgresError::BinariesNotFound) };
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let mut debian: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.filter_map(|entry| Some(entry.ok()?.path().join("bin"))).collect())
        .unwrap_or_default();
    debian.sort_by_key(|dir| dir.parent().and_then(|version| version.file_name()?.to_str()?.parse::<u32>().ok()));
    let on_path =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect::<Vec<_>>()).unwrap_or_default();
    from_pg_config
        .into_iter()
        .chain(debian.into_iter().rev())
        .chain(on_path)
        .find(|dir| has_server(dir))
        .ok_or(LocalPostgresError::BinariesNotFound)
}
