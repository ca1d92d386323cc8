/*
 * Running a loop "until drained" in unit tests: loop_stop is posted after everything else, and
 * posts run in order, so every wake posted before has run when drain() returns. Include after
 * <cmocka.h> and loop/loop.h.
 */
#ifndef WXLOGIN_TESTS_LOOP_DRAIN_H
#define WXLOGIN_TESTS_LOOP_DRAIN_H

static inline void stop_loop(void *arg)
{
    loop_stop(arg);
}

/* Runs loop until everything posted to it so far has run. */
static inline void drain(struct loop *loop)
{
    assert_int_equal(loop_post(loop, stop_loop, loop), 0);
    assert_int_equal(loop_run(loop), 0);
}

#endif
