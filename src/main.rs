//! The pgmux binary: command line, logging, runtime, and OS signals.

use anyhow::Context;
use clap::{Parser, Subcommand};
use pgmux::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "pgmux", version, about = "PostgreSQL connection pooler")]
struct Cli {
    /// Config file (TOML).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the config file and exit.
    #[arg(long)]
    check: bool,
    /// Config file, as a positional argument (like pgbouncer's).
    #[arg(value_name = "CONFIG")]
    config_positional: Option<PathBuf>,
    /// Online upgrade: take the listening sockets and the clients of the pgmux running on
    /// this config's Unix socket, which exits once it holds none (PgBouncer's old -R).
    #[arg(short = 'R', long)]
    takeover: bool,
    /// With --takeover: the running pgmux's Unix socket (its file, or the directory of
    /// .s.PGSQL.<listen_port>), when not this config's unix_socket_dir.
    #[arg(long, value_name = "PATH", requires = "takeover")]
    takeover_socket: Option<PathBuf>,
    /// With --takeover: seconds a client in a transaction may take to finish it before the
    /// old process closes it with 57P01.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30.0,
        requires = "takeover"
    )]
    takeover_timeout: f64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file: print every problem and exit non-zero if there is any.
    Check { file: PathBuf },
    /// Convert a PgBouncer ini file to pgmux's TOML; unsupported settings are listed on stderr.
    Import {
        ini: PathBuf,
        /// PgBouncer userlist.txt to use as auth_file (default: the ini's auth_file).
        #[arg(long)]
        userlist: Option<PathBuf>,
        /// Where to write the TOML (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Import {
        ini,
        userlist,
        output,
    }) = &cli.command
    {
        return import(ini, userlist.as_deref(), output.as_deref());
    }
    let (path, check_only) = match (&cli.command, cli.config.or(cli.config_positional)) {
        (Some(Command::Check { file }), _) => (file.clone(), true),
        (Some(Command::Import { .. }), _) => unreachable!("handled above"),
        (None, Some(path)) => (path, cli.check),
        (None, None) => {
            eprintln!("pgmux: no config file given (pgmux --config FILE, or pgmux check FILE)");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgmux: invalid config {e}");
            return ExitCode::from(1);
        }
    };
    if check_only {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    init_logging(config.general.verbose, config.general.log_format);
    let takeover = match cli.takeover {
        false => None,
        true => match takeover_plan(&config, cli.takeover_socket, cli.takeover_timeout) {
            Ok(plan) => Some(plan),
            Err(e) => {
                eprintln!("pgmux: {e}");
                return ExitCode::from(2);
            }
        },
    };
    match run(config, path, takeover) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

fn import(
    ini: &std::path::Path,
    userlist: Option<&std::path::Path>,
    output: Option<&std::path::Path>,
) -> ExitCode {
    let imported = match pgmux::import::import(ini, userlist) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("pgmux import: {e}");
            return ExitCode::from(1);
        }
    };
    for line in &imported.skipped {
        eprintln!("pgmux import: left out {line}");
    }
    match output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &imported.toml) {
                eprintln!("pgmux import: cannot write {}: {e}", path.display());
                return ExitCode::from(1);
            }
            // The result must pass the same check a start would.
            if let Err(e) = Config::load(path) {
                eprintln!("pgmux import: the converted config does not validate: {e}");
                return ExitCode::from(1);
            }
            eprintln!("pgmux import: wrote {}", path.display());
        }
        None => print!("{}", imported.toml),
    }
    ExitCode::SUCCESS
}

fn init_logging(verbose: u8, format: pgmux::config::LogFormat) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use std::io::IsTerminal;
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        pgmux::config::LogFormat::Json => logger.json().init(),
        pgmux::config::LogFormat::Text => logger.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Where the running pgmux is, and how long its clients in a transaction may take.
struct TakeoverPlan {
    socket: PathBuf,
    deadline: std::time::Duration,
}

fn takeover_plan(
    config: &Config,
    socket: Option<PathBuf>,
    timeout: f64,
) -> Result<TakeoverPlan, String> {
    let socket_name = format!(".s.PGSQL.{}", config.general.listen_port);
    let socket = match socket {
        Some(path) if path.is_dir() => path.join(socket_name),
        Some(path) => path,
        None if config.general.unix_socket_dir.is_empty() => {
            return Err(
                "--takeover finds the running pgmux through its Unix socket: set \
                 unix_socket_dir, or name the socket with --takeover-socket"
                    .into(),
            )
        }
        None => PathBuf::from(&config.general.unix_socket_dir).join(socket_name),
    };
    let deadline = std::time::Duration::try_from_secs_f64(timeout)
        .map_err(|_| format!("--takeover-timeout {timeout}: not a number of seconds"))?;
    Ok(TakeoverPlan { socket, deadline })
}

fn run(config: Config, path: PathBuf, takeover: Option<TakeoverPlan>) -> anyhow::Result<()> {
    let workers = config.general.worker_threads();
    // One worker: the single-threaded scheduler, which hands tasks around without the
    // work-stealing machinery (atomics, idle-worker bookkeeping) that only pays with several.
    let mut builder = match workers {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the runtime")?;
    tracing::info!(workers, "runtime started");
    runtime.block_on(async {
        // Handlers first: a signal that arrives once clients can connect must not kill us.
        let signals = Signals::install()?;
        let running = match takeover {
            None => {
                let running = pgmux::Server::bind(config)
                    .await
                    .context("binding the listen address")?;
                pgmux::notify::ready();
                running
            }
            Some(plan) => {
                let taken = pgmux::takeover::request(&plan.socket, plan.deadline)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("takeover failed, the running pgmux serves on: {e}")
                    })?;
                pgmux::Server::take_over(config, taken)
                    .await
                    .context("serving on the sockets taken over")?
            }
        };
        running.shared.set_config_path(path);
        serve_until_stopped(&running, signals).await?;
        tracing::info!("shutting down");
        running.shutdown().await;
        Ok(())
    })
}

/// Handles signals as PgBouncer does until a shutdown completes: SIGINT waits for servers,
/// SIGTERM for clients, a second one of either or SIGQUIT exits at once.
/// The signals pgmux handles; SIGHUP and SIGUSR1/2 would otherwise end the process.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("installing the {name} handler"))
        };
        Ok(Signals {
            int: install(SignalKind::interrupt(), "SIGINT")?,
            term: install(SignalKind::terminate(), "SIGTERM")?,
            quit: install(SignalKind::quit(), "SIGQUIT")?,
            hup: install(SignalKind::hangup(), "SIGHUP")?,
            usr1: install(SignalKind::user_defined1(), "SIGUSR1")?,
            usr2: install(SignalKind::user_defined2(), "SIGUSR2")?,
        })
    }
}

async fn serve_until_stopped(running: &pgmux::Running, signals: Signals) -> anyhow::Result<()> {
    use pgmux::shutdown::ShutdownMode;
    let Signals {
        mut int,
        mut term,
        mut quit,
        mut hup,
        mut usr1,
        mut usr2,
    } = signals;
    let escalate = |mode: ShutdownMode| {
        if running.shared.shutdown.mode().is_some() {
            running.begin_shutdown(ShutdownMode::Immediate);
        } else {
            running.begin_shutdown(mode);
        }
    };
    loop {
        tokio::select! {
            _ = running.shutdown_complete() => return Ok(()),
            _ = int.recv() => escalate(ShutdownMode::WaitForServers),
            _ = term.recv() => escalate(ShutdownMode::WaitForClients),
            _ = quit.recv() => running.begin_shutdown(ShutdownMode::Immediate),
            _ = hup.recv() => {
                pgmux::notify::reloading();
                // Success and every problem are logged by the reload itself.
                let _ = running.shared.reload_from_file();
                pgmux::notify::ready();
            }
            _ = usr1.recv() => match running.shared.control.pause(None) {
                Ok(()) => tracing::info!("SIGUSR1: paused; new transactions wait for RESUME"),
                Err(e) => tracing::warn!("SIGUSR1: {e}"),
            },
            _ = usr2.recv() => match running.shared.control.resume(None) {
                Ok(()) => tracing::info!("SIGUSR2: resumed"),
                Err(e) => tracing::warn!("SIGUSR2: {e}"),
            },
        }
    }
}
