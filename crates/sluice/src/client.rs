//! A small blocking client of the Sluice API for the CLI: errors carry the server's
//! Problem detail.

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cli::ServerArgs;
use crate::config::Config;

#[derive(Debug)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

/// A response: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Client {
    pub fn new(server: &ServerArgs, config: &Config) -> Client {
        let base = server
            .url
            .clone()
            .or_else(|| std::env::var("SLUICE_URL").ok())
            .unwrap_or_else(|| format!("http://{}", config.http.listen));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn answer(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<Answer> {
        let mut r = r.with_context(|| format!("cannot reach Sluice at {}", self.base))?;
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        Ok(Answer { status, body })
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.answer(self.agent.get(&self.url(path)).call())
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Answer> {
        self.answer(self.agent.delete(&self.url(path)).call())
    }

    pub fn put(&self, path: &str, body: &[u8]) -> anyhow::Result<Answer> {
        let req = self
            .agent
            .put(&self.url(path))
            .header("Content-Type", "application/json");
        self.answer(req.send(body))
    }

    pub fn patch(&self, path: &str, body: &[u8]) -> anyhow::Result<Answer> {
        let req = self
            .agent
            .patch(&self.url(path))
            .header("Content-Type", "application/json");
        self.answer(req.send(body))
    }

    /// A streaming GET: the body as a line reader once the status is 200.
    pub fn stream(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> anyhow::Result<impl std::io::BufRead + use<>> {
        let mut req = self.agent.get(&self.url(path));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let r = req
            .call()
            .with_context(|| format!("cannot reach Sluice at {}", self.base))?;
        if r.status() != 200 {
            self.answer(Ok(r))?.ok()?;
            bail!("the server did not open a stream");
        }
        Ok(std::io::BufReader::new(r.into_body().into_reader()))
    }

    pub fn post(&self, path: &str, body: &[u8]) -> anyhow::Result<Answer> {
        let req = self
            .agent
            .post(&self.url(path))
            .header("Content-Type", "application/json");
        self.answer(req.send(body))
    }
}

impl Answer {
    /// The body as JSON when the status is 2xx; the Problem's detail as the error otherwise.
    pub fn ok_json(self) -> anyhow::Result<Value> {
        self.ok()?;
        serde_json::from_str(&self.body)
            .context("the server answered with something that is not JSON")
    }

    pub fn ok(&self) -> anyhow::Result<()> {
        if (200..300).contains(&self.status) {
            return Ok(());
        }
        let detail = serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|p| p["detail"].as_str().map(String::from))
            .unwrap_or_else(|| self.body.clone());
        bail!("HTTP {}: {detail}", self.status)
    }
}

/// The text of a file named on the command line (`-`: stdin).
pub fn read_input(file: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    if file == std::path::Path::new("-") {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    Ok(text)
}
