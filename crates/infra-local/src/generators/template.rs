//! The default generator: a small Node app with no dependencies that serves a page showing the goal.

use async_trait::async_trait;
use domain::ports::{CodeGenerator, GeneratedFile, GeneratedFiles, GeneratorError};
use domain::JobGoal;

/// Writes `package.json` (start and dev scripts, no dependencies) and `server.js` (node's `http` module on
/// `$PORT`, default 3000), whose page shows the goal.
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplateGenerator;

const PACKAGE_JSON: &str = r#"{
  "name": "slipway-app",
  "version": "0.1.0",
  "private": true,
  "scripts": {
    "start": "node server.js",
    "dev": "node server.js"
  }
}
"#;

#[async_trait]
impl CodeGenerator for TemplateGenerator {
    #[tracing::instrument(skip_all, err)]
    async fn generate(&self, goal: &JobGoal) -> Result<GeneratedFiles, GeneratorError> {
        Ok(GeneratedFiles(vec![
            GeneratedFile {
                path: "package.json".into(),
                content: PACKAGE_JSON.into(),
            },
            GeneratedFile {
                path: "server.js".into(),
                content: server_js(goal.as_str())?,
            },
        ]))
    }
}

/// The server, with the page embedded as a JSON string literal (valid JavaScript whatever the goal holds).
fn server_js(goal: &str) -> Result<String, GeneratorError> {
    let goal = html_escape(goal);
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Your app</title>\n</head>\n<body>\n<main>\n<h1>Your app is live</h1>\n\
         <p class=\"goal\">{goal}</p>\n</main>\n</body>\n</html>\n"
    );
    let page = serde_json::to_string(&page)
        .map_err(|e| GeneratorError::Failed(format!("encode page: {e}")))?;
    Ok(format!(
        r#"const http = require("http");

const PAGE = {page};
const port = Number(process.env.PORT) || 3000;

http
  .createServer((req, res) => {{
    res.writeHead(200, {{ "content-type": "text/html; charset=utf-8" }});
    res.end(PAGE);
  }})
  .listen(port, () => {{
    console.log(`listening on ${{port}}`);
  }});
"#
    ))
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            html_escape(r#"<b>"Tom" & 'Jerry'</b>"#),
            "&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
    }
}
