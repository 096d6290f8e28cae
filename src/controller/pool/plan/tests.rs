use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::ObjectMeta;

use super::*;
use crate::model::kubevirt::{VirtualMachineSpec, VirtualMachineStatus};
use crate::model::{CyberdeskPoolSpec, names};

const POOL_UID: &str = "pool-uid";

fn pool(size: i32, max_booting: Option<i32>) -> CyberdeskPool {
    let mut pool = CyberdeskPool::new(
        "warm",
        CyberdeskPoolSpec {
            size,
            max_booting,
            ..Default::default()
        },
    );
    pool.metadata.uid = Some(POOL_UID.into());
    pool.metadata.generation = Some(1);
    pool
}

fn vm(name: &str, state: &str, printable: &str, ready: bool, age_s: i64) -> VirtualMachine {
    let labels: BTreeMap<String, String> = [
        (names::LABEL_POOL.to_string(), "warm".to_string()),
        (names::LABEL_POOL_STATE.to_string(), state.to_string()),
    ]
    .into();
    let mut vm = VirtualMachine::new(name, VirtualMachineSpec::default());
    vm.metadata = ObjectMeta {
        name: Some(name.into()),
        labels: Some(labels),
        owner_references: Some(vec![OwnerReference {
            uid: POOL_UID.into(),
            kind: "CyberdeskPool".into(),
            ..Default::default()
        }]),
        creation_timestamp: Some(Time(
            Timestamp::from_second(1_800_000_000 - age_s).expect("time"),
        )),
        ..Default::default()
    };
    vm.status = Some(VirtualMachineStatus {
        printable_status: Some(printable.into()),
        ready: Some(ready),
        ..Default::default()
    });
    vm
}

fn ready(name: &str, age_s: i64) -> VirtualMachine {
    vm(name, names::POOL_STATE_AVAILABLE, "Running", true, age_s)
}

fn booting(name: &str, age_s: i64) -> VirtualMachine {
    vm(name, names::POOL_STATE_AVAILABLE, "Starting", false, age_s)
}

fn members(vms: &[VirtualMachine]) -> Vec<Member> {
    vms.iter()
        .filter_map(|vm| {
            Some(Member {
                name: vm.metadata.name.clone()?,
                state: member_state(vm, POOL_UID)?,
                created: vm.metadata.creation_timestamp.as_ref().map(|t| t.0),
            })
        })
        .collect()
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("time")
}

#[test]
fn an_empty_pool_boots_no_more_than_max_booting_at_once() {
    let plan = plan_pool(&pool(20, Some(5)), &[], None, now());
    assert_eq!(plan.create, 5);
    assert!(plan.retire.is_empty());
    let status = plan.status.expect("a first status");
    assert_eq!((status.ready, status.booting, status.claimed), (0, 0, 0));
}

#[test]
fn booting_vms_count_against_max_booting_and_ready_ones_against_size() {
    let vms = [
        ready("a", 60),
        ready("b", 60),
        booting("c", 5),
        booting("d", 5),
    ];
    let plan = plan_pool(&pool(5, Some(3)), &members(&vms), None, now());
    // 2 ready + 2 booting of 5: one more, and 3 may boot at once.
    assert_eq!(plan.create, 1);
    let vms = [booting("a", 5), booting("b", 5), booting("c", 5)];
    let plan = plan_pool(&pool(10, Some(3)), &members(&vms), None, now());
    assert_eq!(plan.create, 0, "three boot already");
}

#[test]
fn a_full_pool_does_nothing_and_writes_nothing_the_second_time() {
    let vms = [ready("a", 60), ready("b", 60)];
    let mut p = pool(2, None);
    let first = plan_pool(&p, &members(&vms), None, now());
    assert_eq!(first.create, 0);
    assert!(first.retire.is_empty());
    p.status = first.status;
    let ready_cond = p
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::READY))
        .expect("Ready");
    assert_eq!(ready_cond.status, ConditionStatus::True);
    let later = Timestamp::from_second(1_800_000_100).expect("time");
    let second = plan_pool(&p, &members(&vms), None, later);
    assert_eq!(
        second.status, None,
        "an unchanged pool is not written again"
    );
}

#[test]
fn claimed_vms_are_counted_but_neither_kept_nor_deleted() {
    let mut claimed = vm("x", names::POOL_STATE_CLAIMED, "Running", true, 60);
    // A claimed VM is owned by its desk now.
    claimed.metadata.owner_references = Some(vec![OwnerReference {
        uid: "desk-uid".into(),
        kind: "Cyberdesk".into(),
        ..Default::default()
    }]);
    let vms = [ready("a", 60), claimed];
    let plan = plan_pool(&pool(2, None), &members(&vms), None, now());
    assert_eq!(plan.create, 1, "the claimed VM no longer fills the pool");
    assert!(plan.retire.is_empty());
    assert_eq!(plan.status.expect("status").claimed, 1);
}

#[test]
fn scaling_down_deletes_booting_vms_first_then_the_newest_ready_ones() {
    let vms = [
        ready("old", 300),
        ready("new", 10),
        ready("mid", 100),
        booting("boot", 1),
    ];
    let plan = plan_pool(&pool(1, None), &members(&vms), None, now());
    assert_eq!(plan.create, 0);
    assert_eq!(plan.retire, ["boot", "new", "mid"]);
}

#[test]
fn failed_vms_are_replaced() {
    let vms = [
        ready("a", 60),
        vm(
            "f",
            names::POOL_STATE_AVAILABLE,
            "CrashLoopBackOff",
            false,
            60,
        ),
    ];
    let plan = plan_pool(&pool(2, None), &members(&vms), None, now());
    assert_eq!(plan.retire, ["f"]);
    assert_eq!(plan.create, 1);
}

#[test]
fn an_unschedulable_vm_waits_in_the_pool_instead_of_being_replaced() {
    let vms = [vm(
        "u",
        names::POOL_STATE_AVAILABLE,
        "ErrorUnschedulable",
        false,
        60,
    )];
    let plan = plan_pool(&pool(1, None), &members(&vms), None, now());
    assert!(plan.retire.is_empty());
    assert_eq!(plan.create, 0);
    assert_eq!(plan.status.expect("status").booting, 1);
}

#[test]
fn a_vm_taken_back_earlier_is_deleted_and_not_counted() {
    let vms = [
        ready("a", 60),
        vm("r", names::POOL_STATE_RETIRING, "Running", true, 60),
    ];
    let plan = plan_pool(&pool(2, None), &members(&vms), None, now());
    assert_eq!(plan.delete, ["r"]);
    assert!(plan.retire.is_empty());
    assert_eq!(plan.create, 1);
}

#[test]
fn a_template_problem_boots_nothing_and_says_why() {
    let plan = plan_pool(&pool(3, None), &[], Some("template x not found"), now());
    assert_eq!(plan.create, 0);
    let status = plan.status.expect("status");
    let template =
        conditions::find(&status.conditions, conditions::TEMPLATE_VALID).expect("TemplateValid");
    assert_eq!(template.status, ConditionStatus::False);
    assert_eq!(template.message, "template x not found");
}

#[test]
fn vms_of_another_pool_uid_are_not_members() {
    let mut stranger = ready("s", 60);
    stranger.metadata.owner_references = Some(vec![OwnerReference {
        uid: "an-earlier-pool".into(),
        ..Default::default()
    }]);
    assert_eq!(member_state(&stranger, POOL_UID), None);
    let mut plain = ready("p", 60);
    plain.metadata.labels = None;
    assert_eq!(member_state(&plain, POOL_UID), None);
}

#[test]
fn desks_claim_only_ready_untaken_vms_and_start_at_different_ones() {
    let vms = [
        ready("a", 60),
        ready("b", 60),
        ready("c", 60),
        booting("d", 1),
        vm("e", names::POOL_STATE_CLAIMED, "Running", true, 60),
    ];
    let p = pool(5, None);
    let order = claim_order(&vms, &p, |n| n == "b", 0, now());
    assert_eq!(order, ["a", "c"]);
    let other = claim_order(&vms, &p, |_| false, 1, now());
    assert_eq!(other, ["b", "c", "a"]);
    assert!(claim_order(&[booting("d", 1)], &p, |_| false, 7, now()).is_empty());
    // Past maxIdleMs a VM is the pool's to replace, not a desk's to take.
    let mut short = pool(5, None);
    short.spec.max_idle_ms = Some(60_000);
    let aged = [ready("old", 60), ready("young", 59)];
    assert_eq!(claim_order(&aged, &short, |_| false, 0, now()), ["young"]);
}

#[test]
fn unclaimed_vms_older_than_max_idle_are_replaced() {
    let mut p = pool(3, None);
    p.spec.max_idle_ms = Some(60_000);
    let mut claimed = ready("c", 600);
    if let Some(labels) = claimed.metadata.labels.as_mut() {
        labels.insert(
            names::LABEL_POOL_STATE.into(),
            names::POOL_STATE_CLAIMED.into(),
        );
    }
    let vms = [
        ready("old", 120),
        booting("stuck", 61),
        ready("young", 30),
        claimed,
    ];
    let plan = plan_pool(&p, &members(&vms), None, now());
    // Oldest first.
    assert_eq!(plan.retire, ["old", "stuck"]);
    assert_eq!(
        plan.replaced,
        [
            ("old".to_string(), "expired"),
            ("stuck".to_string(), "expired")
        ]
    );
    // Two replacements boot at once; the claimed VM is the desk's, however old.
    assert_eq!(plan.create, 2);
    assert_eq!(
        plan.next_expiry,
        Some(now() + jiff::SignedDuration::from_secs(30))
    );
    let status = plan.status.expect("status");
    assert_eq!((status.ready, status.booting, status.claimed), (1, 0, 1));
}

#[test]
fn without_max_idle_a_pool_vm_lives_the_default_four_hours() {
    let vms = [ready("a", 4 * 3600 - 1), ready("b", 4 * 3600)];
    let plan = plan_pool(&pool(2, None), &members(&vms), None, now());
    assert_eq!(plan.retire, ["b"]);
    assert_eq!(plan.create, 1);
    assert_eq!(
        plan.next_expiry,
        Some(now() + jiff::SignedDuration::from_secs(1))
    );
}
