use super::*;

#[tokio::test]
async fn the_flag_decides_unless_it_is_auto() {
    let never = || async { panic!("probed although the flag decides") };
    assert!(streams(InitialList::Stream, never).await);
    assert!(!streams(InitialList::List, never).await);
    assert!(streams(InitialList::Auto, || async { true }).await);
    assert!(!streams(InitialList::Auto, || async { false }).await);
}

#[test]
fn pages_come_from_the_watch_cache() {
    let paged = configure(watcher::Config::default(), false);
    assert_eq!(paged.list_semantic, watcher::ListSemantic::Any);
    assert_eq!(
        paged.initial_list_strategy,
        watcher::InitialListStrategy::ListWatch
    );
    let streamed = configure(watcher::Config::default(), true);
    assert_eq!(
        streamed.initial_list_strategy,
        watcher::InitialListStrategy::StreamingList
    );
}
