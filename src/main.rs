//! The `hookrelay` binary: parse the CLI, start tracing, run the chosen command.

use clap::Parser;
use hookrelay::{Cli, Command, ServeArgs, Server};

fn main() {
    // Before anything else starts a thread (see `alloc`).
    hookrelay::alloc::use_one_malloc_arena();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "hookrelay=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            None => serve(cli.serve).await.map_err(|e| e.to_string()),
            Some(Command::Serve(args)) => serve(args).await.map_err(|e| e.to_string()),
            Some(Command::Listen(args)) => hookrelay::deliver::listen::run(args).await,
            Some(Command::Send(args)) => {
                hookrelay::send::run(args).await.map_err(|e| e.to_string())
            }
        }
    });
    if let Err(e) = result {
        eprintln!("hookrelay: {e}");
        std::process::exit(1);
    }
}

async fn serve(args: ServeArgs) -> Result<(), hookrelay::Error> {
    let listener = hookrelay::server::bind(args.listen)
        .map_err(|e| hookrelay::Error::io(format!("binding {}", args.listen), e))?;
    let tls_listener = match args.tls_listen {
        Some(addr) => Some(
            hookrelay::server::bind(addr)
                .map_err(|e| hookrelay::Error::io(format!("binding {addr}"), e))?,
        ),
        None => None,
    };
    let server = Server::new(args, listener, tls_listener).await?;
    // stdout, not the logger: the banner holds the key, and logs never do.
    print!("{}", server.banner());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    server.run(shutdown_signal()).await
}

async fn shutdown_signal() {
    hookrelay::state::stop_signal().await;
    tracing::info!("shutting down");
}
