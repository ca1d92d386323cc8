#include "runtime/delay.h"

static void on_timer(void *arg)
{
    struct delay *d = arg;
    async_end(&d->async);
    d->fn(d->arg);
}

static void on_cancel(struct async *a)
{
    struct delay *d = (struct delay *)(void *)a;
    loop_timer_stop(d->loop, &d->timer);
}

void delay_start(struct delay *d, struct loop *loop, struct async_slot *slot, uint64_t ms,
                 void (*fn)(void *arg), void *arg)
{
    d->loop = loop;
    d->fn = fn;
    d->arg = arg;
    loop_timer_init(&d->timer, on_timer, d);
    async_begin(&d->async, slot, on_cancel);
    loop_timer_start(loop, &d->timer, ms);
}
