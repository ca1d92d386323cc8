/*
 * runtime/delay: a timer as an asynchronous operation, for waits an owner's slot holds (the
 * mock's delayed answers, a login polling another instance's claim, a token fetch polling the
 * shared token). Embedded in the owner's state; cancelling the slot stops the timer.
 */
#ifndef WXLOGIN_RUNTIME_DELAY_H
#define WXLOGIN_RUNTIME_DELAY_H

#include <stdint.h>

#include "loop/loop.h"
#include "runtime/async.h"

struct delay {
    struct async async;
    struct loop_timer timer;
    struct loop *loop;
    void (*fn)(void *arg);
    void *arg;
};

/* fn(arg) runs on loop after ms, unless slot is cancelled first. */
void delay_start(struct delay *d, struct loop *loop, struct async_slot *slot, uint64_t ms,
                 void (*fn)(void *arg), void *arg);

#endif
