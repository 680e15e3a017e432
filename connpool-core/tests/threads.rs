//! The pool used from several OS threads at once, with no runtime: every count stays exact.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use connpool_core::Pool;
use futures::executor::block_on;
use support::{addr, TestDialer};

#[test]
fn concurrent_use_keeps_every_invariant_and_the_stats_exact() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 2_000;
    const CAPACITY: usize = 3;
    let dialer = TestDialer::new();
    let pool = Pool::new(dialer.clone(), CAPACITY, Duration::from_secs(600)).unwrap();
    let addrs: Vec<String> = (0..5).map(|i| addr(&format!("10.0.0.{i}:80"))).collect();
    let in_use = Arc::new(Mutex::new(HashSet::new()));
    let barrier = Arc::new(Barrier::new(THREADS));
    let deadline = Instant::now() + Duration::from_secs(20);

    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (pool, addrs, in_use, barrier) =
                (pool.clone(), addrs.clone(), in_use.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for round in 0..ROUNDS {
                    if Instant::now() > deadline {
                        break;
                    }
                    let a = &addrs[(t * 7 + round) % addrs.len()];
                    let mut held = Vec::new();
                    for _ in 0..(round % 3 + 1) {
                        let conn = if round % 11 == 0 {
                            block_on(pool.dial(a)).unwrap()
                        } else {
                            block_on(pool.get(a)).unwrap()
                        };
                        assert_eq!(&conn.addr, a, "I4: handed out for another address");
                        assert!(in_use.lock().unwrap().insert(conn.id), "I1: held twice");
                        held.push(conn);
                    }
                    for (i, conn) in held.into_iter().enumerate() {
                        in_use.lock().unwrap().remove(&conn.id);
                        match (round + i) % 13 {
                            0 => conn.release(),
                            1 => drop(conn.detach()),
                            _ => drop(conn),
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }

    let stats = pool.stats();
    let c = &stats.counters;
    for d in &stats.destinations {
        assert!(d.idle <= CAPACITY, "I2: {d:?}");
        assert_eq!(d.total, d.idle, "nothing is held any more: {d:?}");
    }
    assert_eq!(c.dials as usize, dialer.dials());
    assert_eq!(dialer.live() as u64 + c.detached, c.dials - c.closed());
    assert_eq!(
        c.dials,
        stats.idle() as u64 + c.closed() + c.detached,
        "I3: dialed = idle + held + closed + detached: {c:?}"
    );
    assert!(c.hits > 0 && c.released > 0 && c.detached > 0);
    pool.close();
    assert_eq!(dialer.live(), 0);
}

/// Guards coming back on other threads while the last pool handle goes (a guard reaches its pool
/// through a reference its bucket lends it): every connection is closed once the last guard is
/// back, whichever came first.
#[test]
fn guards_returned_while_the_last_handle_goes_close_every_connection() {
    const ROUNDS: usize = 300;
    const THREADS: usize = 2;
    const GUARDS: usize = 3;
    let dialer = TestDialer::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for round in 0..ROUNDS {
        if Instant::now() > deadline {
            break;
        }
        let pool = Pool::new(dialer.clone(), 2, Duration::from_secs(600)).unwrap();
        let addrs: Vec<String> = (0..2).map(|i| addr(&format!("10.1.0.{i}:80"))).collect();
        let barrier = Arc::new(Barrier::new(THREADS + 1));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let guards: Vec<_> = (0..GUARDS)
                    .map(|g| block_on(pool.get(&addrs[(t + g) % addrs.len()])).unwrap())
                    .collect();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    for (g, guard) in guards.into_iter().enumerate() {
                        match (round + g) % 5 {
                            0 => guard.release(),
                            _ => drop(guard),
                        }
                    }
                })
            })
            .collect();
        barrier.wait();
        drop(pool);
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(
            dialer.live(),
            0,
            "round {round}: a connection outlived its pool"
        );
    }
}
