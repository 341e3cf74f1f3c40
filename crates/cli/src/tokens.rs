//! `ricochet token create/list/revoke`: the controller's API tokens.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use ricochet_api::types::{CreatedToken, Deleted, Role, TokenList};
use serde_json::json;

use crate::api_client::ClientArgs;
use crate::objects::{segment, table};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; it is printed once (the controller keeps only its hash).
    Create(CreateArgs),
    /// List the tokens: names, roles, engines, creation times (never the tokens).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The token's name (events name it as the actor).
    pub name: String,
    /// admin (everything), operator (objects and engines, no tokens), read_only, or
    /// engine (register, desired configuration and reports of one engine).
    #[arg(long, value_parser = |s: &str| s.parse::<Role>())]
    pub role: Role,
    /// For --role engine: the engine name the token acts for.
    #[arg(long)]
    pub engine: Option<String>,
    /// Print only the token (for scripts: `ricochet token create ... --quiet > file`).
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn run(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create(args) => {
            let mut body = json!({"name": args.name, "role": args.role});
            if let Some(engine) = &args.engine {
                body["engine"] = json!(engine);
            }
            let (created, _): (CreatedToken, _) =
                args.client
                    .client()
                    .call("POST", "/api/v1/tokens", Some(&body), &[])?;
            if args.quiet {
                println!("{}", created.token);
            } else {
                let engine = match &created.info.engine {
                    Some(e) => format!(" for engine {e}"),
                    None => String::new(),
                };
                outln!(
                    "created token {} (role {}{engine}, revision {}); it is shown only this once:",
                    created.info.name,
                    created.info.role,
                    created.revision
                );
                println!("{}", created.token);
            }
        }
        TokenCommand::List { client } => {
            let list: TokenList = client.client().get("/api/v1/tokens")?;
            let rows: Vec<Vec<String>> = list
                .items
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.role.to_string(),
                        t.engine.clone().unwrap_or_else(|| "-".to_owned()),
                        t.created_at.clone(),
                    ]
                })
                .collect();
            print!("{}", table(&["NAME", "ROLE", "ENGINE", "CREATED"], &rows));
        }
        TokenCommand::Revoke { name, client } => {
            let path = format!("/api/v1/tokens/{}", segment(&name)?);
            let (deleted, _): (Deleted, _) = client.client().call("DELETE", &path, None, &[])?;
            outln!(
                "revoked token {} (revision {})",
                deleted.name,
                deleted.revision
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
