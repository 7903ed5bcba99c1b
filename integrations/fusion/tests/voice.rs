//! The voice gateway client against the simulator, over real HTTP.

use std::time::Duration;

use civichub_fusion::simulator::{VoiceSimConfig, VoiceSimulator};
use civichub_fusion::{Error, VoiceGateway, VoiceNotice, VoiceState};

fn notice(reference: &str) -> VoiceNotice {
    VoiceNotice { to: "13800000000".into(), text: "您反映的问题已办结，请对办理结果进行评价。".into(), reference: reference.into() }
}

async fn setup(config: VoiceSimConfig) -> (VoiceSimulator, VoiceGateway) {
    let sim = VoiceSimulator::start(config).await.expect("simulator starts");
    let gateway = VoiceGateway::new(sim.client_config()).expect("client");
    (sim, gateway)
}

#[tokio::test]
async fn notify_then_status_settles_to_answered() {
    let (sim, gw) = setup(VoiceSimConfig { settle_after: Duration::from_millis(500), ..VoiceSimConfig::default() }).await;
    let call = gw.notify(&notice("ticket-1-1")).await.expect("placed");
    let calls = sim.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].call_id.as_str(), calls[0].callee.as_str(), calls[0].caller.as_str(), calls[0].out_id.as_str()), (call.call_id.as_str(), "13800000000", "12345", "ticket-1-1"));
    assert!(calls[0].tts.contains("已办结"));

    let status = gw.status(&call.call_id).await.expect("status");
    assert_eq!((status.state, status.duration_secs), (VoiceState::Pending, 0));
    assert!(!status.state.is_final());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = gw.status(&call.call_id).await.expect("status");
    assert_eq!((status.state, status.duration_secs), (VoiceState::Answered, 12));
}

#[tokio::test]
async fn repeated_reference_does_not_ring_twice_and_outcomes_are_configurable() {
    let (sim, gw) = setup(VoiceSimConfig { settle_after: Duration::ZERO, ..VoiceSimConfig::default() }).await;
    let first = gw.notify(&notice("ticket-2-1")).await.expect("placed");
    let again = gw.notify(&notice("ticket-2-1")).await.expect("idempotent");
    assert_eq!(first, again);
    assert_eq!(sim.calls().len(), 1);

    sim.set_outcome_for("13900000000", VoiceState::Busy);
    let busy = gw.notify(&VoiceNotice { to: "13900000000".into(), ..notice("ticket-3-1") }).await.expect("placed");
    assert_eq!(gw.status(&busy.call_id).await.expect("status").state, VoiceState::Busy);
    sim.set_outcome(VoiceState::NoAnswer);
    let status = gw.status(&first.call_id).await.expect("status");
    assert_eq!((status.state, status.duration_secs), (VoiceState::NoAnswer, 0));

    let err = gw.status("v-does-not-exist").await.expect_err("unknown");
    assert!(matches!(&err, Error::Api { code, status: 404, .. } if code == "NotFound") && !err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn bad_key_is_permanent() {
    let sim = VoiceSimulator::start(VoiceSimConfig::default()).await.expect("simulator starts");
    let mut config = sim.client_config();
    config.api_key = "wrong".into();
    let gw = VoiceGateway::new(config).expect("client");
    let err = gw.notify(&notice("ticket-4-1")).await.expect_err("refused");
    assert!(matches!(&err, Error::Api { code, status: 401, .. } if code == "Unauthorized"), "{err:?}");
    assert!(!err.is_retryable());
    assert!(sim.calls().is_empty());
}

#[tokio::test]
async fn invalid_notices_are_not_sent() {
    let (sim, gw) = setup(VoiceSimConfig::default()).await;
    let err = gw.notify(&VoiceNotice { to: "call me".into(), ..notice("ticket-5-1") }).await.expect_err("invalid");
    assert!(matches!(err, Error::Invalid(_)) && !err.is_retryable());
    assert_eq!(sim.requests(), 0);
}

#[tokio::test]
async fn failures_and_outages_are_retryable() {
    let (mut sim, gw) = setup(VoiceSimConfig::default()).await;
    sim.fail_next(1);
    let err = gw.notify(&notice("ticket-6-1")).await.expect_err("failed");
    assert!(matches!(&err, Error::Api { status: 500, .. }) && err.is_retryable(), "{err:?}");
    gw.notify(&notice("ticket-6-1")).await.expect("retry succeeds");

    sim.set_down(true);
    let err = gw.notify(&notice("ticket-6-2")).await.expect_err("down");
    assert!(matches!(&err, Error::Api { status: 503, .. }) && err.is_retryable(), "{err:?}");
    sim.set_down(false);

    sim.stop().await;
    let err = gw.notify(&notice("ticket-6-3")).await.expect_err("refused");
    assert!(matches!(err, Error::Transport(_)) && err.is_retryable(), "{err:?}");
    assert_eq!(sim.calls().len(), 1);
}
