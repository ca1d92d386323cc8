/*
 * util/utf8: the one UTF-8 decoder, for the writers that must never pass on or cut a broken
 * character (util/jsonw, the log) and the checks of text that comes from outside (WeChat's
 * answers).
 *
 * Valid means RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF.
 */
#ifndef WXLOGIN_UTIL_UTF8_H
#define WXLOGIN_UTIL_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length of the valid UTF-8 sequence at s (n > 0 bytes available): 1 to 4, or 0 when s[0]
 * starts none (a stray byte, an overlong form, a cut sequence...). */
size_t utf8_char_len(const unsigned char *s, size_t n);

/*
 * The code point of the valid sequence of len bytes at s (len from utf8_char_len).
 */
uint32_t utf8_decode(const unsigned char *s, size_t len);

/*
 * True for a character that moves a terminal or a line reader rather than showing: C0 controls
 * and DEL, C1 controls (U+0080 to U+009F; U+0085 is NEL, U+009B a CSI) and the line and
 * paragraph separators U+2028/U+2029 (line ends to JavaScript and to Python's splitlines).
 */
bool utf8_is_control(uint32_t cp);

/* True when s (n bytes) is valid UTF-8 and holds no control character (see utf8_is_control):
 * text fit to be shown, logged or handed on as it is. */
bool utf8_text_ok(const char *s, size_t n);

#endif
