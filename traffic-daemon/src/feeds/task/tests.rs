use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use traffic_common::{FEED_CLASS_BASE, FEED_DENY, GLOBAL_FEED_GEN1, GLOBAL_HAS_FEEDS};

use super::*;
use crate::{
    config::Config,
    dataplane::{fake::Fake, feeds::MemoryTries},
    engine::Core,
};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trf-feeds-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn setup(feeds: &str) -> (Arc<Shared>, MemoryTries, Task) {
    let text = format!(
        "[daemon]\ninterfaces = [\"veth0\"]\n[classes.default]\n[classes.suspect]\n{feeds}"
    );
    let config = Config::parse(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    let fake = Fake::default();
    let tries = fake.feeds.clone();
    let core = Core::new(config, Box::new(fake)).unwrap();
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        config_path: PathBuf::from("t.toml"),
        listeners: Default::default(),
        fleet: None,
    });
    let task = Task {
        tries: Some(shared.lock().dp.feed_tries().unwrap()),
        current: None,
        lists: BTreeMap::new(),
        specs: BTreeMap::new(),
        due: BTreeMap::new(),
        swapped: None,
        versions: 0,
    };
    (shared, tries, task)
}

fn v4(t: &MemoryTries) -> Vec<(String, [u16; 2])> {
    t.read(Family::V4)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (parse::key_text(false, k), v))
        .collect()
}

fn flags(shared: &Shared) -> u32 {
    shared.lock().applied.global.flags
}

#[tokio::test]
async fn a_file_feed_is_loaded_swapped_and_a_bad_refresh_keeps_the_last_list() {
    let dir = scratch("file");
    let list = dir.join("deny.txt");
    std::fs::write(&list, "# test\n198.18.1.0/24\n2001:db8::/32\n").unwrap();
    let (shared, tries, mut task) = setup(&format!(
        "[[feeds]]\nname = \"bad\"\nsource = \"{}\"\naction = \"deny\"\n",
        list.display()
    ));
    let gen0 = shared.lock().applied.global.rules_gen;
    task.round(&shared).await;
    assert_eq!(v4(&tries), [("198.18.1.0/24".to_owned(), [0, FEED_DENY])]);
    assert_eq!(tries.read(Family::V6).unwrap().len(), 1);
    assert_eq!(
        flags(&shared) & (GLOBAL_HAS_FEEDS | GLOBAL_FEED_GEN1),
        GLOBAL_HAS_FEEDS | GLOBAL_FEED_GEN1
    );
    let gen1 = shared.lock().applied.global.rules_gen;
    assert_ne!(gen0, gen1, "cached classifications re-resolve");

    // A new list: the old /24 goes, a covering /16 comes.
    std::fs::write(&list, "198.18.0.0/16\n").unwrap();
    assert!(shared.lock().feeds.request(Some("bad")));
    task.round(&shared).await;
    assert_eq!(v4(&tries), [("198.18.0.0/16".to_owned(), [FEED_DENY, 0])]);
    assert!(tries.read(Family::V6).unwrap().is_empty());
    assert_eq!(flags(&shared) & GLOBAL_FEED_GEN1, 0);

    // Garbage: refused, counted, the list stays.
    std::fs::write(&list, "<html>oops</html>\n").unwrap();
    shared.lock().feeds.request(None);
    task.round(&shared).await;
    let report = shared.lock().feeds.report();
    let st = &report.feeds[0];
    assert_eq!(
        (st.refreshes_ok, st.refreshes_failed, st.prefixes),
        (2, 1, 1)
    );
    assert!(
        st.last_error.as_deref().unwrap().contains("invalid"),
        "{st:?}"
    );
    assert_eq!(v4(&tries), [("198.18.0.0/16".to_owned(), [FEED_DENY, 0])]);

    // Over its size bound: refused too.
    std::fs::write(&list, "198.18.0.1\n".repeat(10)).unwrap();
    {
        let mut core = shared.lock();
        core.config.feeds[0].max_bytes = 50;
    }
    task.round(&shared).await;
    let st = shared.lock().feeds.report().feeds[0].clone();
    assert!(st.last_error.unwrap().contains("max_size"));
    assert_eq!(v4(&tries), [("198.18.0.0/16".to_owned(), [FEED_DENY, 0])]);
}

#[tokio::test]
async fn a_class_feed_lists_the_class_slot_and_removing_feeds_clears_the_tries() {
    let dir = scratch("class");
    let list = dir.join("suspect.txt");
    std::fs::write(&list, "198.18.2.0/24\n").unwrap();
    let (shared, tries, mut task) = setup(&format!(
        "[[feeds]]\nname = \"sus\"\nsource = \"{}\"\nclass = \"suspect\"\n",
        list.display()
    ));
    task.round(&shared).await;
    let slot = {
        let core = shared.lock();
        core.slots.slot_of("suspect").unwrap() as u16
    };
    assert_eq!(
        v4(&tries),
        [("198.18.2.0/24".to_owned(), [0, FEED_CLASS_BASE + slot])]
    );
    shared.lock().config.feeds.clear();
    task.round(&shared).await;
    assert!(v4(&tries).is_empty());
    assert_eq!(flags(&shared) & GLOBAL_HAS_FEEDS, 0);
    assert!(shared.lock().feeds.report().feeds.is_empty());
}

#[tokio::test]
async fn a_url_feed_starts_from_its_disk_copy_when_the_server_is_down() {
    let dir = scratch("cache");
    let cache = dir.join("drop.list");
    std::fs::write(&cache, "; Spamhaus DROP\n198.18.3.0/24 ; SBL1\n").unwrap();
    // Port 9 on loopback: nothing listens, the connection is refused at once.
    let (shared, tries, mut task) = setup(&format!(
        "[[feeds]]\nname = \"drop\"\nsource = \"http://127.0.0.1:9/drop.txt\"\naction = \"deny\"\ncache = \"{}\"\ntimeout = \"2s\"\n",
        cache.display()
    ));
    task.round(&shared).await;
    assert_eq!(v4(&tries), [("198.18.3.0/24".to_owned(), [0, FEED_DENY])]);
    let st = shared.lock().feeds.report().feeds[0].clone();
    assert!(st.from_cache);
    assert_eq!(
        (st.refreshes_ok, st.refreshes_failed, st.prefixes),
        (0, 1, 1)
    );
    assert!(st.last_error.is_some());
}
