//! The attempt loop: send a prepared request to the pool's nodes, one attempt at a time,
//! retrying on another node as the pool's policy and retry budget allow.
//!
//! Each attempt ([`Attempt`]) picks a node with the pool's strategy and claims an in-flight
//! slot on it in the same step (a node that reached `max_connections_per_node` meanwhile
//! is passed over like any full node), sends through the upstream layer, and records what
//! came back against the node: its latency, its outcome metric and its outlier streak. A
//! node is never tried twice for one request. What may be retried: a connect failure for
//! any method (nothing reached the node); a timeout, a broken connection (counted as a
//! `502`) and the pool's retryable statuses for idempotent methods only; never a failure of
//! the client's own body. The answer ends the in-flight claim when its body ends
//! (`proxy::body`), not when its head arrives.

use std::future::Future;
use std::time::{Duration, Instant};

use http::Response;
use strategies::{InFlight, PickContext};
use tokio_util::task::TaskTracker;

use crate::balance::outlier;
use crate::balance::snapshot::{Node, Pool};
use crate::metrics::Outcome;
use crate::proxy::answer::ProxyError;
use crate::proxy::body::{Completion, PendingLog, ResponseBody};
use crate::proxy::headers;
use crate::proxy::prepare::{request_body, Prepared};
use crate::upstream::{self, ClientBodyError, Exchange, Kind, Target, UpstreamError};
use crate::util::clock;
use crate::util::report::error_chain;

/// The most attempts a request can make (1 + retries).
const MAX_ATTEMPTS: usize = 11;
/// How many nodes one request may skip or try before giving up (503).
const EXCLUDE_CAP: usize = 32;

/// A failed request: the answer to make, and the access-log line to finish with it.
pub(super) type Failed = (ProxyError, Option<Box<PendingLog>>);

/// Send `p` to `pool`'s nodes, retrying as the pool's policy allows; `tracker` owns the
/// tunnels of upgraded connections. (A plain `fn` returning an `async` block: an `async fn`
/// would keep a second copy of each argument in its state, and this future is moved on
/// every poll set-up.)
#[allow(clippy::manual_async_fn)]
pub(super) fn forward<'a>(
    tracker: &'a TaskTracker,
    pool: &'a Pool,
    mut p: Prepared,
    body_limit: Option<u64>,
    start: Instant,
    mut log: Option<Box<PendingLog>>,
) -> impl Future<Output = Result<Response<ResponseBody>, Failed>> + Send + 'a {
    async move {
        let policy = &pool.retry;
        let now_ms = clock::now_ms();
        pool.budget.record_request(now_ms);
        p.out.body = match request_body(
            p.incoming,
            policy.attempts > 0 || p.out.upgrade,
            pool.request_timeout,
            body_limit,
            pool.idle_timeout,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => return Err((e, log)),
        };

        let max_attempts = (policy.attempts as usize + 1).min(MAX_ATTEMPTS);
        let mut excluded = Excluded::default();
        let mut last_err = ProxyError::NoHealthyNode;
        let idempotent = upstream::idempotent(&p.out.method);

        for number in 0..max_attempts {
            let Some(attempt) = Attempt::start(pool, p.hash, &mut excluded, now_ms, number) else {
                break;
            };
            if number > 0 {
                pool.metrics.retries.inc();
            }
            if let Some(l) = log.as_mut() {
                l.record.attempts = number as u32 + 1;
                l.record.node.clear();
                l.record.node.push_str(&attempt.node.addr);
            }
            let target = attempt.target(pool, p.timeout);
            let result = upstream::send(&target, &mut p.out).await;
            let rules = Rules {
                // Another attempt needs the request still here, and a try left.
                can_retry: number + 1 < max_attempts && p.out.body.is_sendable(),
                idempotent,
                now_ms: clock::now_ms(),
            };
            match result {
                Ok(ex) => {
                    if let Some(e) = attempt.answered(pool, &ex, &rules) {
                        last_err = e;
                        continue;
                    }
                    let down = p.downstream_upgrade.take();
                    return Ok(respond(
                        tracker,
                        pool,
                        ex,
                        down,
                        attempt.in_flight,
                        start,
                        log,
                    ));
                }
                Err(e) => match attempt.failed(pool, e, &rules) {
                    AfterFailure::Retry(e) => last_err = e,
                    AfterFailure::Stop(e) => {
                        last_err = e;
                        break;
                    }
                    AfterFailure::ClientBody(e) => return Err((e, log)),
                },
            }
        }
        Err((last_err, log))
    }
}

/// Nodes a request must not be sent to again: tried ones, and ones found full.
struct Excluded {
    nodes: [usize; EXCLUDE_CAP],
    len: usize,
}

impl Default for Excluded {
    fn default() -> Excluded {
        Excluded {
            nodes: [usize::MAX; EXCLUDE_CAP],
            len: 0,
        }
    }
}

impl Excluded {
    fn as_slice(&self) -> &[usize] {
        &self.nodes[..self.len]
    }

    /// Note `node`; false once the list is full (the request gives up on finding one).
    fn add(&mut self, node: usize) -> bool {
        if self.len < EXCLUDE_CAP {
            self.nodes[self.len] = node;
            self.len += 1;
        }
        self.len < EXCLUDE_CAP
    }
}

/// What decides whether an attempt may be followed by another.
struct Rules {
    can_retry: bool,
    idempotent: bool,
    now_ms: u64,
}

/// One attempt: the node it goes to, its claim on that node, and when it was sent.
struct Attempt<'a> {
    /// 0 for the first try.
    number: usize,
    node: &'a Node,
    /// The node's in-flight slot, held until the response body ends, or the attempt fails.
    in_flight: InFlight,
    sent_at: Instant,
}

/// What to do after an attempt failed.
enum AfterFailure {
    Retry(ProxyError),
    Stop(ProxyError),
    /// The client's own body failed: answer it, retry nothing, hold nothing against the node.
    ClientBody(ProxyError),
}

impl<'a> Attempt<'a> {
    /// Pick a node and claim an in-flight slot on it atomically: a node that reached
    /// `max_connections_per_node` between the pick and the claim is skipped like any
    /// saturated node, so concurrent requests never overshoot the cap. `None` when no node
    /// qualifies.
    fn start(
        pool: &'a Pool,
        hash: u64,
        excluded: &mut Excluded,
        now_ms: u64,
        number: usize,
    ) -> Option<Attempt<'a>> {
        loop {
            let ctx = PickContext {
                hash,
                exclude: excluded.as_slice(),
                now_ms,
            };
            let idx = pool.strategy.pick(&ctx)?;
            let node = pool.nodes.get(idx)?;
            let room = excluded.add(idx);
            if let Some(in_flight) = node.stats.try_start_request() {
                return Some(Attempt {
                    number,
                    node,
                    in_flight,
                    sent_at: Instant::now(),
                });
            }
            if !room {
                return None;
            }
        }
    }

    /// Where this attempt goes; its answer's head is due within `timeout` of the send.
    fn target(&self, pool: &'a Pool, timeout: Duration) -> Target<'a> {
        Target {
            transport: &pool.transport,
            conns: &self.node.conns,
            addr: self.node.socket_addr,
            node: &self.node.authority,
            server_name: self.node.server_name.as_ref(),
            deadline: tokio::time::Instant::from_std(self.sent_at) + timeout,
        }
    }

    /// The node answered: record it against the node. `Some` when the answer is a retryable
    /// 5xx and the rules and the budget allow another node: the error to answer with if
    /// none does better; `None` passes the answer on.
    fn answered(&self, pool: &Pool, ex: &Exchange, rules: &Rules) -> Option<ProxyError> {
        let node = self.node;
        let status = ex.response.status();
        // The node's latency, without the time spent opening a connection.
        node.stats.observe_rtt(ex.handed_over.elapsed());
        let failed = status.is_server_error();
        node.metrics.record(if failed {
            Outcome::HttpError
        } else {
            Outcome::Success
        });
        outlier::record(pool, node, failed, rules.now_ms);
        let policy = &pool.retry;
        if failed
            && rules.can_retry
            && rules.idempotent
            && policy.retries_status(status.as_u16())
            && pool.budget.try_retry(rules.now_ms, policy.budget_percent)
        {
            return Some(ProxyError::UpstreamStatus(status.as_u16()));
        }
        None
    }

    /// The attempt failed: record it against the node (unless the client's body was at
    /// fault) and say whether another node may be tried.
    fn failed(self, pool: &Pool, e: UpstreamError, rules: &Rules) -> AfterFailure {
        let Attempt {
            number,
            node,
            in_flight,
            sent_at,
        } = self;
        drop(in_flight);
        let kind = e.kind();
        if kind == Kind::ClientBody {
            // The client's body broke (or crossed `max_body_bytes`, or stalled): the
            // client's doing, not the node's — nothing is held against the node and nothing
            // is retried.
            tracing::debug!(pool = %pool.name, error = %error_chain(&e), "request body failed");
            return AfterFailure::ClientBody(client_body_error(&e));
        }
        // A node that stops answering must not look fast while its estimate decays: the
        // time this attempt cost counts as its latency.
        node.stats.observe_rtt(sent_at.elapsed());
        let policy = &pool.retry;
        let (outcome, retry) = match kind {
            // Nothing reached the node: safe to retry for any method.
            Kind::Connect => (Outcome::ConnectError, policy.on_connect_failure),
            Kind::ConnectTimeout => (
                Outcome::Timeout,
                policy.on_connect_failure || policy.on_timeout,
            ),
            Kind::Timeout => (Outcome::Timeout, policy.on_timeout && rules.idempotent),
            // A reset or close after the request was sent counts as a 502.
            Kind::Broken | Kind::ClientBody => (
                Outcome::HttpError,
                policy.retries_status(502) && rules.idempotent,
            ),
        };
        node.metrics.record(outcome);
        outlier::record(pool, node, true, rules.now_ms);
        tracing::debug!(pool = %pool.name, node = %node.addr, error = %error_chain(&e), attempt = number, "upstream attempt failed");
        let err = ProxyError::Upstream(e);
        if rules.can_retry && retry && pool.budget.try_retry(rules.now_ms, policy.budget_percent) {
            AfterFailure::Retry(err)
        } else {
            AfterFailure::Stop(err)
        }
    }
}

/// The node's answer on its way to the client: a tunnel for an upgrade (the client's side
/// in `downstream_upgrade`), hop-by-hop headers gone otherwise, and the body wrapped so the
/// accounting ends when it does.
fn respond(
    tracker: &TaskTracker,
    pool: &Pool,
    ex: Exchange,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
    in_flight: InFlight,
    start: Instant,
    log: Option<Box<PendingLog>>,
) -> Response<ResponseBody> {
    let mut resp = ex.response;
    match (ex.upgraded, downstream_upgrade) {
        (Some(up), Some(down)) => {
            tracker.spawn(crate::proxy::tunnel::run(down, up, pool.idle_timeout));
        }
        _ => headers::strip_hop_by_hop(resp.headers_mut(), false),
    }
    let (rparts, rbody) = resp.into_parts();
    let completion = Completion {
        in_flight: Some(in_flight),
        metrics: pool.metrics.clone(),
        status: rparts.status.as_u16(),
        start,
        bytes: 0,
        log,
    };
    Response::from_parts(
        rparts,
        ResponseBody::upstream(rbody, completion, pool.idle_timeout),
    )
}

/// The answer to a request whose own body failed.
fn client_body_error(e: &UpstreamError) -> ProxyError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<ClientBodyError>() {
            return match b {
                ClientBodyError::TooLarge => ProxyError::BodyTooLarge,
                ClientBodyError::Idle => ProxyError::RequestTimeout,
                ClientBodyError::Failed(_) => ProxyError::BadRequest,
            };
        }
        cur = err.source();
    }
    ProxyError::BadRequest
}
