//! The `sluicegate` command: parse arguments, call the library, map errors to
//! exit codes.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use sluicegate::config::Config;
use sluicegate::edge::{self, Listeners};

/// Split live HTTP traffic between versions of a service.
#[derive(Debug, Parser)]
#[command(name = "sluicegate", version, about, long_about = None)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy from a config file.
    #[command(
        after_help = "Examples:\n  sluicegate run -c config/blue-green.toml\n  RUST_LOG=debug sluicegate run -c sluicegate.yaml --log-format json"
    )]
    Run {
        /// Config file: TOML, or YAML when the name ends in .yaml/.yml.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file; print every error as FILE:LINE:COL: message.
    #[command(
        after_help = "Exit status: 0 valid, 1 invalid.\n\nExamples:\n  sluicegate check -c config/blue-green.toml\n  for f in config/*; do sluicegate check -c \"$f\"; done"
    )]
    Check {
        /// Config file to validate.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Start built-in blue and green backends and a proxy at 90/10 on loopback.
    #[command(
        after_help = "Examples:\n  sluicegate demo\n  sluicegate demo --port 18080 --admin-port 19901"
    )]
    Demo {
        /// Proxy port on 127.0.0.1.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Admin port on 127.0.0.1.
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
    },
    /// Client for the admin API: status, set, promote, rollback, history, reload, canary, drain.
    Ctl(Box<sluicegate::ctl::CtlArgs>),
    /// GET a URL; exit 0 on 2xx, 1 otherwise (container health checks without curl).
    Probe(sluicegate::ctl::probe::ProbeArgs),
    /// Print the JSON Schema of the config file (for editors and CI linters).
    #[command(
        after_help = "Examples:\n  sluicegate schema > sluicegate.schema.json\n  # TOML (taplo, Even Better TOML): first line of the file\n  #:schema ./sluicegate.schema.json"
    )]
    Schema,
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  sluicegate completions bash > /etc/bash_completion.d/sluicegate\n  sluicegate completions zsh > \"${fpath[1]}/_sluicegate\"\n  sluicegate completions fish > ~/.config/fish/completions/sluicegate.fish"
    )]
    Completions {
        /// bash, zsh, fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    #[command(
        after_help = "Examples:\n  sluicegate man > /usr/local/share/man/man1/sluicegate.1\n  sluicegate man | man -l -"
    )]
    Man,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => block_on(run(config)),
        Command::Ctl(args) => sluicegate::ctl::main(*args),
        Command::Probe(args) => sluicegate::ctl::probe::main(args),
        Command::Schema => print(&sluicegate::config::schema::text()),
        Command::Completions { shell } => {
            let mut stdout = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "sluicegate", &mut stdout);
            ExitCode::SUCCESS
        }
        Command::Man => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut page) {
                Ok(()) => print(&String::from_utf8_lossy(&page)),
                Err(e) => {
                    eprintln!("sluicegate: cannot render the man page: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { port, admin_port } => block_on(async move {
            sluicegate::demo::run(port, admin_port, shutdown_signal())
                .await
                .map_err(|e| e.to_string())
        }),
    }
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> ExitCode {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluicegate: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    // Also reads the CA files, as start-up and reloads do.
    match sluicegate::control::load(path) {
        Ok(prepared) => {
            let routes = prepared.config.routes.len();
            for warning in prepared.config.warnings() {
                eprintln!("{}: warning: {warning}", path.display());
            }
            println!("{}: ok ({routes} routes)", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: PathBuf) -> Result<(), String> {
    // Refused before binding when a CA file cannot be read.
    let config = sluicegate::control::load(&path)
        .map_err(|e| e.to_string())?
        .config;
    let listeners = listeners(&config).await?;
    let shutdown = upgrade_or_shutdown(&listeners)?;
    // An upgrading parent keeps serving until this says ready, which is only
    // once start-up can no longer fail.
    #[cfg(unix)]
    let ready = sluicegate::edge::upgrade::announce_ready;
    #[cfg(not(unix))]
    let ready = || {};
    edge::run_then(config, listeners, shutdown, ready)
        .await
        .map_err(|e| e.to_string())
}

/// The listeners handed over by an upgrading process, or freshly bound ones.
async fn listeners(config: &Config) -> Result<Listeners, String> {
    #[cfg(unix)]
    if let Some(mut inherited) =
        sluicegate::edge::upgrade::inherited_listeners().map_err(|e| e.to_string())?
    {
        let expected = config.listeners.len() + 1;
        if inherited.len() != expected {
            return Err(format!(
                "inherited {} sockets, the config needs {expected} (listeners + admin): restart instead of upgrading",
                inherited.len()
            ));
        }
        let admin = inherited.pop();
        tracing::info!("serving on sockets handed over by the previous process");
        return Ok(Listeners {
            data: inherited,
            admin,
        });
    }
    Listeners::bind(config).await.map_err(|e| e.to_string())
}

/// Resolves on Ctrl-C or SIGTERM, or once SIGUSR2 has started a successor
/// that took over the listening sockets.
#[cfg(unix)]
fn upgrade_or_shutdown(
    listeners: &Listeners,
) -> Result<impl Future<Output = ()> + Send + 'static, String> {
    let all: Vec<&tokio::net::TcpListener> =
        listeners.data.iter().chain(&listeners.admin).collect();
    let sockets =
        std::sync::Arc::new(sluicegate::edge::upgrade::keep(&all).map_err(|e| e.to_string())?);
    let mut usr2 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())
        .map_err(|e| format!("cannot listen for SIGUSR2: {e}"))?;
    let upgraded = async move {
        loop {
            if usr2.recv().await.is_none() {
                return std::future::pending().await;
            }
            tracing::info!("SIGUSR2: starting the new binary with the listening sockets");
            let sockets = std::sync::Arc::clone(&sockets);
            let started = tokio::task::spawn_blocking(move || {
                sluicegate::edge::upgrade::start_successor(&sockets)
            })
            .await;
            match started {
                Ok(Ok(pid)) => {
                    tracing::info!(pid, "the new process is serving: draining this one");
                    return;
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "upgrade failed: this process keeps serving")
                }
                Err(error) => tracing::error!(%error, "upgrade failed: this process keeps serving"),
            }
        }
    };
    Ok(async move {
        tokio::select! {
            () = shutdown_signal() => {}
            () = upgraded => {}
        }
    })
}

#[cfg(not(unix))]
fn upgrade_or_shutdown(_: &Listeners) -> Result<impl Future<Output = ()> + Send + 'static, String> {
    Ok(shutdown_signal())
}

/// Runs `future` on a multi-threaded runtime with one worker per CPU this
/// process may use, or on a single-threaded one when that is one CPU (a
/// sidecar limited to one core, a pinned process): the same work without
/// the cross-thread bookkeeping.
fn block_on(future: impl Future<Output = Result<(), String>>) -> ExitCode {
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluicegate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sluicegate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
