//! The `switchyard` command line: parse arguments, set up logging, start the runtime, and
//! hand over to the library (`switchyard::control::supervisor`). Errors end here, printed
//! for a human.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use switchyard::cli::{demo, node};
use switchyard::config;
use switchyard::control::supervisor::Supervisor;

/// mimalloc instead of glibc malloc: the request path allocates and frees many small
/// objects (header maps, bodies, futures), and profiling showed glibc's free-list
/// consolidation and heap trimming as a visible share of CPU per request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "switchyard", version, about = "An L7 HTTP load balancer")]
struct Cli {
    /// Log format on stderr (level filter from RUST_LOG, default `info`).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve with the given config.
    Run {
        #[arg(short, long, default_value = "switchyard.yaml")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or print every error as FILE:LINE:COLUMN and exit 1.
    Check {
        #[arg(short, long, default_value = "switchyard.yaml")]
        config: PathBuf,
    },
    /// Three built-in echo backends and the balancer, for a first try.
    Demo {
        /// Where the balancer listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
        /// Where the admin API listens.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_bind: String,
    },
    /// Register, deregister and list nodes in the Redis registry.
    Node {
        #[command(subcommand)]
        command: node::NodeCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => exit(run(config)),
        Command::Demo { bind, admin_bind } => {
            exit(runtime(0).and_then(|rt| rt.block_on(demo::run(&bind, &admin_bind))))
        }
        Command::Node { command } => exit(node::run(command)),
    }
}

fn exit(res: anyhow::Result<()>) -> ExitCode {
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let (ok, report) = config::check_report(path);
    println!("{report}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    let loaded = config::load(&path).map_err(|errors| {
        anyhow::anyhow!("the config has errors; fix them and start again:\n{errors}")
    })?;
    let rt = runtime(loaded.config.workers)?;
    rt.block_on(async move {
        let sup = Supervisor::start(loaded, Some(path)).await?;
        sup.run().await
    })
}

/// The tokio runtime. With `workers: 1` a current-thread runtime serves everything on the
/// calling thread: no work-stealing queues or cross-thread wake-ups, which is measurably
/// cheaper per request than a one-worker multi-thread runtime.
fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if workers > 0 {
            b.worker_threads(workers);
        }
        b.thread_name("switchyard-worker");
        b
    };
    b.enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}
