pub(crate) async fn function(_c: FunctionCommand) -> anyhow::Result<std::process::ExitCode> {
    todo_cli()
}
pub(crate) async fn invoke(_c: InvokeArgs) -> anyhow::Result<std::process::ExitCode> {
    todo_cli()
}
pub(crate) async fn logs(_c: LogsArgs) -> anyhow::Result<std::process::ExitCode> {
    todo_cli()
}
fn todo_cli() -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not yet")
}
#[derive(Debug, clap::Subcommand)]
pub(crate) enum FunctionCommand {
    List,
}
#[derive(Debug, clap::Args)]
pub(crate) struct InvokeArgs {
    name: String,
}
#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    name: String,
}
