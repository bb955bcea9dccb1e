/* SPDX-License-Identifier: Apache-2.0 */
/*
 * protocol.c against SPEC sections 2 and 3: the samples byte for byte, the
 * guide's sloppy JSON, and everything a hostile or broken platform could
 * send. Payloads are copied into exact-size, unterminated buffers so that
 * the sanitizers catch any read past the end.
 */
#include <stdlib.h>

#include "protocol.h"
#include "tap.h"
#include "util/macro.h"
#include "util/strings.h"

/* Parses S (C string) from a copy with no NUL after it. */
static int parse_n(const char *s, size_t len, PlatformMessage *m)
{
        char *copy = malloc(len ? len : 1);
        int r;

        if (!copy)
                abort();
        memcpy(copy, s, len);
        r = protocol_parse(copy, len, m);
        free(copy);
        return r;
}

static int parse(const char *s, PlatformMessage *m)
{
        return parse_n(s, strlen(s), m);
}

/* Expects S to fail with ERR and to leave the message zeroed. */
static void parse_fails(const char *s, int err, const char *name)
{
        PlatformMessage m = {.cmd = 99, .has_size = true};

        is_int(parse(s, &m), err, name);
        ok(m.cmd == 0 && !m.id && !m.url && !m.fw_version && !m.has_size && !m.device_secret,
           "  ... and leaves the message zeroed");
        platform_message_clear(&m); /* only matters when the test fails */
}

/* Expects S to decode to a message refused with REASON: CMD and ID kept, every other field dropped. */
static void parse_refused(const char *s, int cmd, const char *id, const char *reason, const char *name)
{
        PlatformMessage m = {.cmd = 99, .has_size = true};

        is_int(parse(s, &m), 0, name);
        is_str(m.invalid, reason, "  refused with its reason");
        is_int(m.cmd, cmd, "  its CMD");
        is_str(m.id, id, "  its ID, to answer");
        ok(!m.url && !m.fw_version && !m.md5 && !m.sha256 && !m.has_size && m.size == 0 && !m.device_secret,
           "  and nothing else");
        platform_message_clear(&m);
        ok(!m.invalid && !m.id, "  clear drops the reason too");
}

static void test_encoders(void)
{
        char *s = NULL;

        is_int(protocol_version_report("7QK2M9X1ZC0B", "1.0.0", "2.0.0", &s), 0, "version report encodes");
        is_str(s, "{\"CMD\":10,\"ID\":\"7QK2M9X1ZC0B\",\"HW_VERSION\":\"1.0.0\",\"FW_VERSION\":\"2.0.0\"}",
               "version report is the SPEC sample");
        free(s);

        is_int(protocol_ota_receipt("2836S8F46SDR", true, NULL, &s), 0, "OTA receipt encodes");
        is_str(s, "{\"CMD\":11,\"ID\":\"2836S8F46SDR\",\"BACK\":\"OK\"}", "OTA receipt is the SPEC sample");
        free(s);

        is_int(protocol_ota_receipt("2836S8F46SDR", true, "ignored", &s), 0, "OK receipt with a reason");
        is_str(s, "{\"CMD\":11,\"ID\":\"2836S8F46SDR\",\"BACK\":\"OK\"}", "an OK receipt carries no REASON");
        free(s);

        is_int(protocol_ota_receipt("X", false, "bad URL", &s), 0, "FAIL receipt encodes");
        is_str(s, "{\"CMD\":11,\"ID\":\"X\",\"BACK\":\"FAIL\",\"REASON\":\"bad URL\"}",
               "FAIL receipt has REASON last");
        free(s);

        is_int(protocol_ota_receipt("X", false, NULL, &s), 0, "FAIL receipt without reason");
        is_str(s, "{\"CMD\":11,\"ID\":\"X\",\"BACK\":\"FAIL\"}", "no REASON key when none is given");
        free(s);

        is_int(protocol_register_request("A1B2C3D4E5F6", "P1", "D1", &s), 0, "register request encodes");
        is_str(s, "{\"CMD\":20,\"ID\":\"A1B2C3D4E5F6\",\"PRODUCT_ID\":\"P1\",\"DEVICE_ID\":\"D1\"}",
               "register request is the SPEC sample");
        free(s);

        is_int(protocol_register_receipt("A1B2C3D4E5F6", &s), 0, "register receipt encodes");
        is_str(s, "{\"CMD\":21,\"ID\":\"A1B2C3D4E5F6\",\"BACK\":\"OK\"}",
               "register receipt is the SPEC sample");
        free(s);

        is_int(protocol_progress("J1", "DOWNLOADING", 42, NULL, &s), 0, "progress encodes");
        is_str(s, "{\"CMD\":12,\"ID\":\"J1\",\"STATE\":\"DOWNLOADING\",\"PROGRESS\":42}",
               "progress without reason");
        free(s);

        is_int(protocol_progress("J1", "FAILED", 150, "GET http://h/a.swu: 404", &s), 0,
               "progress with reason");
        is_str(s,
               "{\"CMD\":12,\"ID\":\"J1\",\"STATE\":\"FAILED\",\"PROGRESS\":100,\"REASON\":\"GET "
               "http://h/a.swu: 404\"}",
               "progress is capped at 100 and '/' is not escaped");
        free(s);

        is_int(protocol_ota_receipt("X", false, "quote \" backslash \\ newline \n tab \t", &s), 0,
               "receipt with characters JSON must escape");
        is_str(s,
               "{\"CMD\":11,\"ID\":\"X\",\"BACK\":\"FAIL\",\"REASON\":\"quote \\\" backslash \\\\ newline "
               "\\n tab \\t\"}",
               "they are escaped, so the output stays one valid JSON object");
        free(s);

        is_int(protocol_version_report("ID\xe4\xb8\xad", "\xe7\xa1\xac\xe4\xbb\xb6", "2.0.0", &s), 0,
               "version report with UTF-8");
        is_str(s,
               "{\"CMD\":10,\"ID\":\"ID\xe4\xb8\xad\",\"HW_VERSION\":\"\xe7\xa1\xac\xe4\xbb\xb6\",\"FW_"
               "VERSION\":\"2.0.0\"}",
               "UTF-8 is written as is, not \\u-escaped");
        free(s);

        s = NULL;
        is_int(protocol_version_report(NULL, "1", "2", &s), -EINVAL, "a NULL field is refused");
        ok(s == NULL, "  ... and nothing is returned");
}

static void test_spec_samples_decode(void)
{
        PlatformMessage m;

        is_int(parse("{\"CMD\":11,\"ID\":\"2836S8F46SDR\",\"URL\":\"http://host/fw/"
                     "2.0.1.swu\",\"FW_VERSION\":\"2.0.1\"}",
                     &m),
               0, "SPEC CMD 11 sample decodes");
        is_int(m.cmd, 11, "  CMD");
        is_str(m.id, "2836S8F46SDR", "  ID");
        is_str(m.url, "http://host/fw/2.0.1.swu", "  URL");
        is_str(m.fw_version, "2.0.1", "  FW_VERSION");
        ok(!m.has_size && !m.md5 && !m.sha256 && !m.device_secret, "  no optional fields");
        platform_message_clear(&m);
        ok(!m.id && !m.url && !m.fw_version && m.cmd == 0, "clear frees and zeroes");
        platform_message_clear(&m); /* twice: must be harmless */

        is_int(parse("{\"CMD\":21,\"ID\":\"A1B2C3D4E5F6\",\"DEVICE_SECRET\":\"s3cr3t\"}", &m), 0,
               "SPEC CMD 21 sample decodes");
        is_int(m.cmd, 21, "  CMD");
        is_str(m.id, "A1B2C3D4E5F6", "  ID");
        is_str(m.device_secret, "s3cr3t", "  DEVICE_SECRET");
        platform_message_clear(&m);
        ok(!m.device_secret, "clear releases the secret");

        is_int(parse("{\"CMD\":10,\"ID\":\"7QK2M9X1ZC0B\",\"HW_VERSION\":\"1.0.0\",\"FW_VERSION\":\"2.0."
                     "0\"}",
                     &m),
               0, "SPEC CMD 10 sample decodes (HW_VERSION is an unknown key to the reader)");
        is_int(m.cmd, 10, "  CMD");
        is_str(m.fw_version, "2.0.0", "  FW_VERSION");
        platform_message_clear(&m);

        is_int(parse("{\"CMD\":11,\"ID\":\"X\",\"URL\":\"https://h/"
                     "a\",\"FW_VERSION\":\"3\",\"SIZE\":1048576,"
                     "\"MD5\":\"d41d8cd98f00b204e9800998ecf8427e\",\"SHA256\":"
                     "\"e3b0c44298fc1c149afbf4c8996fb924"
                     "27ae41e4649b934ca495991b7852b855\"}",
                     &m),
               0, "CMD 11 with every extension decodes");
        ok(m.has_size && m.size == 1048576, "  SIZE");
        is_str(m.md5, "d41d8cd98f00b204e9800998ecf8427e", "  MD5");
        is_str(m.sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "  SHA256");
        platform_message_clear(&m);
}

/* The samples of the platform's guide, as printed there. */
static void test_guide_samples(void)
{
        PlatformMessage m;

        is_int(parse("{\n        \"CMD\" :11,\n        \"ID\" : \"2836S8F46SDR\" ,\n"
                     "        \"URL\" : \"http://iot.krtyun.com:16004/iot-telegov-html/rtthread.rbl\" ,\n"
                     "        \"FW_VERSION\" : \"1.0.1\"\n}",
                     &m),
               0, "guide CMD 11 sample (spaces before colons and commas) decodes");
        is_int(m.cmd, 11, "  CMD");
        is_str(m.id, "2836S8F46SDR", "  ID");
        is_str(m.url, "http://iot.krtyun.com:16004/iot-telegov-html/rtthread.rbl", "  URL");
        is_str(m.fw_version, "1.0.1", "  FW_VERSION");
        platform_message_clear(&m);

        is_int(parse("{\n    \"CMD\" :11,\n    \"ID\" : \"2836S8F46SDR\" ,\n    \"BACK\" : \"OK\"\n}", &m),
               0, "guide receipt sample decodes");
        platform_message_clear(&m);

        /* The guide's CMD 10 sample has a trailing comma and no ID at all. */
        parse_fails("{\n    \"CMD\":10,\n    \"HW_VERSION\": \"1.0.0\",\n    \"FW_VERSION\": \"2.0.0\",\n}",
                    -ENOMSG, "guide CMD 10 sample: trailing comma parses, missing ID is -ENOMSG");

        is_int(parse("{\n    \"CMD\":10,\n    \"ID\":\"A\",\n    \"HW_VERSION\": \"1.0.0\",\n    "
                     "\"FW_VERSION\": \"2.0.0\",\n}",
                     &m),
               0, "a trailing comma in an object is accepted (json-c non-strict mode)");
        is_str(m.fw_version, "2.0.0", "  with its fields");
        platform_message_clear(&m);

        is_int(parse("{\"CMD\":11,\"ID\":\"X\",\"URL\":\"http://h/f\",\"VERSION\":\"1.0.1\"}", &m), 0,
               "VERSION instead of FW_VERSION decodes");
        is_str(m.fw_version, "1.0.1", "  VERSION is taken as FW_VERSION");
        platform_message_clear(&m);

        is_int(parse("{\"CMD\":11,\"ID\":\"X\",\"VERSION\":\"1\",\"FW_VERSION\":\"2\"}", &m), 0,
               "both VERSION and FW_VERSION");
        is_str(m.fw_version, "2", "  FW_VERSION wins");
        platform_message_clear(&m);

        is_int(parse("{\"CMD\":\"11\",\"ID\":\"X\"}", &m), 0, "CMD as a digit string");
        is_int(m.cmd, 11, "  is 11");
        platform_message_clear(&m);

        is_int(parse("{\"CMD\":\"000000021\",\"ID\":\"X\"}", &m), 0, "CMD as 9 digits with leading zeros");
        is_int(m.cmd, 21, "  is 21");
        platform_message_clear(&m);

        is_int(parse("{\"CMD\":99,\"ID\":\"X\",\"FOO\":{\"a\":[1,2,{\"b\":null}]},\"BAR\":true}", &m), 0,
               "unknown keys (even nested) are ignored; an unknown CMD decodes");
        is_int(m.cmd, 99, "  CMD 99");
        platform_message_clear(&m);

        is_int(parse("{\"CMD\":11,\"ID\":\"X\",\"MD5\":null,\"SIZE\":null}", &m), 0,
               "null values count as absent");
        ok(!m.md5 && !m.has_size, "  MD5 and SIZE absent");
        platform_message_clear(&m);
}

static void test_size_limits(void)
{
        PlatformMessage m;
        const char *head = "{\"CMD\":11,\"ID\":\"X\",\"PAD\":\"";
        size_t n = PROTOCOL_MAX_PAYLOAD + 1;
        char *buf = malloc(n);

        if (!buf)
                abort();

        /* A valid object of exactly 16 KiB: header, padding string, closing. */
        memset(buf, 'a', n);
        memcpy(buf, head, strlen(head));
        memcpy(buf + PROTOCOL_MAX_PAYLOAD - 2, "\"}", 2);
        is_int(parse_n(buf, PROTOCOL_MAX_PAYLOAD, &m), 0, "a valid payload of exactly 16 KiB is accepted");
        is_int(m.cmd, 11, "  and decoded");
        platform_message_clear(&m);

        /* The same object one byte longer. */
        memcpy(buf + PROTOCOL_MAX_PAYLOAD - 2, "a\"}", 3);
        m.cmd = 7;
        is_int(parse_n(buf, PROTOCOL_MAX_PAYLOAD + 1, &m), -EMSGSIZE,
               "16 KiB + 1 is -EMSGSIZE, valid JSON or not");
        is_int(m.cmd, 0, "  and leaves the message zeroed");
        free(buf);

        is_int(protocol_parse("x", SIZE_MAX, &m), -EMSGSIZE, "a huge length is refused before reading");
}

static void test_not_objects(void)
{
        parse_fails("[]", -EBADMSG, "an empty array is -EBADMSG");
        parse_fails("[{\"CMD\":11,\"ID\":\"X\"}]", -EBADMSG, "an array holding a command is -EBADMSG");
        parse_fails("42 ", -EBADMSG, "a number is -EBADMSG");
        parse_fails("\"CMD\" ", -EBADMSG, "a string is -EBADMSG");
        parse_fails("null", -EBADMSG, "null is -EBADMSG");
        parse_fails("true", -EBADMSG, "true is -EBADMSG");
        parse_fails("", -EBADMSG, "empty is -EBADMSG");
        parse_fails("   \n", -EBADMSG, "whitespace only is -EBADMSG");
        parse_fails("garbage", -EBADMSG, "garbage is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":\"X\"", -EBADMSG, "truncated JSON is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":\"X", -EBADMSG, "JSON truncated inside a string is -EBADMSG");
        parse_fails("{\"CMD\":11,,\"ID\":\"X\"}", -EBADMSG, "a double comma is -EBADMSG");
        parse_fails("{CMD:11,ID:\"X\"}", -EBADMSG, "unquoted keys are -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":\"X\"} x", -EBADMSG, "trailing garbage is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":\"X\"}{\"CMD\":11,\"ID\":\"Y\"}", -EBADMSG,
                    "two objects are -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":\"X\",\"A\":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}", -EBADMSG,
                    "nesting deeper than the limit is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":\"\xff\xfe\"}", -EBADMSG, "invalid UTF-8 is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":\"\xc0\xaf\"}", -EBADMSG, "overlong UTF-8 (C0 AF) is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":\"\xe0\x80\xaf\"}", -EBADMSG,
                    "overlong UTF-8 (E0 80 AF) is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":\"\xed\xa0\x80\"}", -EBADMSG, "an encoded surrogate is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":\"\xf4\x90\x80\x80\"}", -EBADMSG, "above U+10FFFF is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":\"\xe4\xb8\"}", -EBADMSG, "a cut UTF-8 sequence is -EBADMSG");

        PlatformMessage m;
        is_int(parse_n("{\"CMD\":11,\"ID\":\"X\"}\0", 20, &m), -EBADMSG,
               "a NUL after the object is trailing garbage");
        is_int(parse_n("{\"CMD\":11,\0\"ID\":\"X\"}", 20, &m), -EBADMSG,
               "a NUL inside the object is -EBADMSG");
        is_int(parse("{\"CMD\":11,\"ID\":\"X\"} \r\n\t", &m), 0, "trailing whitespace is fine");
        platform_message_clear(&m);
        is_int(protocol_parse(NULL, 0, &m), -EBADMSG, "NULL payload is -EBADMSG");
}

/*
 * json-c 0.16 saturates integers beyond 64 bits silently: 18446744073709551621
 * reads as UINT64_MAX, -99999999999999999999 as INT64_MIN. An ID is echoed
 * digit for digit or not at all (-ERANGE): never as another number.
 */
static void test_integer_ids(void)
{
        static const struct {
                const char *id;
                int r; /* 0: echoed as the same digits */
        } table[] = {
                {"0", 0},
                {"-5", 0},
                {"9223372036854775806", 0},
                {"9223372036854775807", 0}, /* INT64_MAX: exact, json-c reads positive numbers unsigned */
                {"9223372036854775808", 0},
                {"18446744073709551614", 0},       /* the largest exact one */
                {"18446744073709551615", -ERANGE}, /* UINT64_MAX: cannot be told from what saturates to it */
                {"18446744073709551616", -ERANGE},
                {"18446744073709551621", -ERANGE}, /* the review's example */
                {"99999999999999999999999999999", -ERANGE},
                {"-9223372036854775807", 0},       /* the smallest exact one */
                {"-9223372036854775808", -ERANGE}, /* INT64_MIN: the same, below */
                {"-9223372036854775809", -ERANGE},
                {"-18446744073709551621", -ERANGE},
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                PlatformMessage m = {};
                char buf[128], name[128];
                int r;

                snprintf(buf, sizeof(buf), "{\"CMD\":11,\"ID\":%s,\"URL\":\"http://h/f\"}", table[i].id);
                r = parse(buf, &m);
                snprintf(name, sizeof(name), "integer ID %s %s", table[i].id,
                         table[i].r == 0 ? "is echoed exactly" : "is refused (-ERANGE), not altered");
                is_int(r, table[i].r, name);
                if (table[i].r == 0)
                        is_str(m.id, table[i].id, "  as the same digits");
                else
                        ok(!m.id && !m.url && m.cmd == 0, "  and leaves the message zeroed");
                platform_message_clear(&m);
        }

        /* The saturation this relies on: if a json-c release stops saturating, these say so. */
        {
                PlatformMessage m = {};

                ok(parse("{\"CMD\":11,\"ID\":\"X\",\"SIZE\":18446744073709551621}", &m) == 0 && m.has_size &&
                           m.size == UINT64_MAX,
                   "json-c saturates numbers above UINT64_MAX to UINT64_MAX");
                platform_message_clear(&m);
        }
}

static void test_fields(void)
{
        PlatformMessage m;
        char buf[8192], field[PROTOCOL_MAX_FIELD + 2];

        parse_refused("{\"ID\":\"X\",\"URL\":\"http://h/f\"}", CMD_NONE, "X", "CMD missing",
                      "no CMD but an ID: decoded, to be refused");
        parse_refused("{\"CMD\":null,\"ID\":\"X\"}", CMD_NONE, "X", "CMD missing",
                      "a null CMD is a missing one");
        parse_fails("{\"CMD\":11,\"URL\":\"http://h/f\",\"FW_VERSION\":\"1\"}", -ENOMSG, "no ID is -ENOMSG");
        parse_fails("{\"URL\":\"http://h/f\"}", -ENOMSG, "neither CMD nor ID is -ENOMSG");
        parse_fails("{\"CMD\":\"x\",\"URL\":5}", -ENOMSG, "no ID: -ENOMSG whatever else is wrong");
        parse_fails("{\"ID\":true}", -EBADMSG, "no CMD and a boolean ID is -EBADMSG (nothing to echo)");
        parse_fails("{\"CMD\":11,\"ID\":null}", -ENOMSG, "a null ID is -ENOMSG");
        parse_fails("{\"CMD\":11,\"ID\":\"\"}", -EBADMSG, "an empty ID is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":true}", -EBADMSG, "a boolean ID is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":1.5}", -EBADMSG, "a fractional ID is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":[\"X\"]}", -EBADMSG, "an array ID is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":{}}", -EBADMSG, "an object ID is -EBADMSG");
        parse_fails("{\"CMD\":11,\"ID\":\"A\\u0000B\"}", -EBADMSG, "an ID with an embedded NUL is -EBADMSG");

        is_int(parse("{\"CMD\":11,\"ID\":123456}", &m), 0, "an integer ID is accepted");
        is_str(m.id, "123456", "  as its decimal text");
        platform_message_clear(&m);

        test_integer_ids();

        snprintf(buf, sizeof(buf), "{\"CMD\":11,\"ID\":\"%0*d\"}", PROTOCOL_MAX_ID, 0);
        is_int(parse(buf, &m), 0, "an ID of PROTOCOL_MAX_ID characters is accepted");
        is_int(strlen(m.id), PROTOCOL_MAX_ID, "  whole");
        ok(!m.invalid, "  and valid");
        platform_message_clear(&m);
        snprintf(buf, sizeof(buf), "{\"CMD\":11,\"ID\":\"%0*d\",\"URL\":\"http://h/f\"}",
                 PROTOCOL_MAX_ID + 1, 0);
        is_int(parse(buf, &m), 0, "an ID one longer decodes, to be refused");
        is_str(m.invalid, "ID longer than 64 bytes", "  with that reason");
        is_int(m.id ? strlen(m.id) : 0, PROTOCOL_MAX_ID + 1, "  echoing the whole ID");
        ok(!m.url, "  and nothing else");
        platform_message_clear(&m);
        snprintf(buf, sizeof(buf), "{\"ID\":\"%0*d\"}", PROTOCOL_MAX_ID + 1, 0);
        is_int(parse(buf, &m), 0, "an over-long ID and no CMD");
        is_str(m.invalid, "ID longer than 64 bytes", "  the ID's problem comes first");
        is_int(m.cmd, CMD_NONE, "  CMD_NONE");
        platform_message_clear(&m);

#define BAD_CMD "CMD must be a non-negative integer or a string of 1-9 digits"
        parse_refused("{\"CMD\":\"\",\"ID\":\"X\"}", CMD_NONE, "X", BAD_CMD, "CMD empty string");
        parse_refused("{\"CMD\":\"1a\",\"ID\":\"X\"}", CMD_NONE, "X", BAD_CMD, "CMD \"1a\"");
        parse_refused("{\"CMD\":\" 11\",\"ID\":\"X\"}", CMD_NONE, "X", BAD_CMD, "CMD with a space");
        parse_refused("{\"CMD\":\"-11\",\"ID\":\"X\"}", CMD_NONE, "X", BAD_CMD, "CMD \"-11\"");
        parse_refused("{\"CMD\":\"1234567890\",\"ID\":\"X\"}", CMD_NONE, "X", BAD_CMD, "CMD of 10 digits");
        parse_refused("{\"CMD\":-1,\"ID\":\"X\"}", CMD_NONE, "X", BAD_CMD, "CMD -1");
        parse_refused("{\"CMD\":2147483648,\"ID\":\"X\"}", CMD_NONE, "X", BAD_CMD, "CMD above INT_MAX");
        parse_refused("{\"CMD\":11.0,\"ID\":\"X\"}", CMD_NONE, "X", BAD_CMD, "CMD 11.0");
        parse_refused("{\"CMD\":true,\"ID\":\"X\"}", CMD_NONE, "X", BAD_CMD, "CMD true");
        parse_refused("{\"CMD\":[11],\"ID\":\"X\",\"URL\":\"http://h/f\"}", CMD_NONE, "X", BAD_CMD,
                      "CMD [11]");
#undef BAD_CMD

        /* SPEC 5.1: a bad field is answered FAIL with a REASON, never dropped silently. */
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"URL\":5,\"FW_VERSION\":\"2\"}", 11, "X",
                      "URL must be a string", "a numeric URL");
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"URL\":\"http://h/f\",\"FW_VERSION\":{}}", 11, "X",
                      "FW_VERSION must be a string", "an object FW_VERSION");
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"URL\":\"http://h/f\",\"FW_VERSION\":2.0}", 11, "X",
                      "FW_VERSION must be a string", "a numeric FW_VERSION");
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"VERSION\":3}", 11, "X", "VERSION must be a string",
                      "a numeric VERSION");
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"MD5\":[]}", 11, "X", "MD5 must be a string",
                      "an array MD5");
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"SHA256\":true}", 11, "X", "SHA256 must be a string",
                      "a boolean SHA256");
        parse_refused("{\"CMD\":21,\"ID\":\"X\",\"DEVICE_SECRET\":7}", 21, "X",
                      "DEVICE_SECRET must be a string", "a numeric DEVICE_SECRET");
        parse_refused("{\"CMD\":21,\"ID\":\"X\",\"DEVICE_SECRET\":\"\"}", 21, "X",
                      "DEVICE_SECRET must not be empty", "an empty DEVICE_SECRET");
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"URL\":\"http://h/\\u0000.evil\"}", 11, "X",
                      "URL contains a NUL character", "a URL with an embedded NUL");
        parse_refused("{\"CMD\":11,\"ID\":7,\"SHA256\":1,\"URL\":2}", 11, "7", "URL must be a string",
                      "two bad fields: the first checked is named (integer ID echoed)");

#define BAD_SIZE "SIZE must be a non-negative integer or a string of 1-20 digits"
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"SIZE\":-1}", 11, "X", BAD_SIZE, "SIZE -1");
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"SIZE\":-99999999999999999999}", 11, "X", BAD_SIZE,
                      "SIZE below INT64_MIN (json-c saturates it, still negative)");
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"SIZE\":1.5}", 11, "X", BAD_SIZE, "SIZE 1.5");
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"SIZE\":\"12a\"}", 11, "X", BAD_SIZE, "SIZE \"12a\"");
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"SIZE\":\"\"}", 11, "X", BAD_SIZE, "SIZE \"\"");
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"SIZE\":false}", 11, "X", BAD_SIZE, "SIZE false");
        parse_refused("{\"CMD\":11,\"ID\":\"X\",\"SIZE\":\"18446744073709551616\"}", 11, "X",
                      "SIZE larger than 18446744073709551615", "SIZE string above UINT64_MAX");
#undef BAD_SIZE

        is_int(parse("{\"CMD\":11,\"ID\":\"X\",\"SIZE\":\"18446744073709551615\"}", &m), 0,
               "SIZE string UINT64_MAX");
        ok(m.has_size && m.size == UINT64_MAX, "  is UINT64_MAX");
        platform_message_clear(&m);
        is_int(parse("{\"CMD\":11,\"ID\":\"X\",\"SIZE\":\"1024\"}", &m), 0, "SIZE as a digit string");
        ok(m.has_size && m.size == 1024, "  is 1024");
        platform_message_clear(&m);
        is_int(parse("{\"CMD\":11,\"ID\":\"X\",\"SIZE\":0}", &m), 0, "SIZE 0");
        ok(m.has_size && m.size == 0, "  is present and 0");
        platform_message_clear(&m);

        /* String length limits: exactly at the limit passes, one more fails. */
        memset(field, 'u', sizeof(field));
        field[PROTOCOL_MAX_FIELD] = '\0';
        snprintf(buf, sizeof(buf), "{\"CMD\":11,\"ID\":\"X\",\"URL\":\"%s\"}", field);
        is_int(parse(buf, &m), 0, "a URL of PROTOCOL_MAX_FIELD bytes is accepted");
        is_int(strlen(m.url), PROTOCOL_MAX_FIELD, "  whole");
        platform_message_clear(&m);
        field[PROTOCOL_MAX_FIELD] = 'u';
        field[PROTOCOL_MAX_FIELD + 1] = '\0';
        snprintf(buf, sizeof(buf), "{\"CMD\":11,\"ID\":\"X\",\"URL\":\"%s\"}", field);
        parse_refused(buf, 11, "X", "URL longer than 4096 bytes", "a URL one byte longer");
        snprintf(buf, sizeof(buf), "{\"CMD\":11,\"ID\":\"X\",\"MD5\":\"%s\"}", field);
        parse_refused(buf, 11, "X", "MD5 longer than 4096 bytes", "an over-long MD5");

        field[1024] = '\0';
        snprintf(buf, sizeof(buf), "{\"CMD\":21,\"ID\":\"X\",\"DEVICE_SECRET\":\"%s\"}", field);
        is_int(parse(buf, &m), 0, "a secret of 1024 bytes is accepted");
        platform_message_clear(&m);
        field[1024] = 'u';
        field[1025] = '\0';
        snprintf(buf, sizeof(buf), "{\"CMD\":21,\"ID\":\"X\",\"DEVICE_SECRET\":\"%s\"}", field);
        parse_refused(buf, 21, "X", "DEVICE_SECRET longer than 1024 bytes", "a secret of 1025 bytes");
}

static void test_unicode(void)
{
        PlatformMessage m;
        char *s = NULL;

        is_int(parse("{\"CMD\":11,\"ID\":\"\\u8bbe\\u5907\",\"URL\":\"http://\xe4\xbe\x8b\xe5\xad\x90/"
                     "\xe5\x9b\xba.swu\"}",
                     &m),
               0, "\\u escapes and raw UTF-8 decode");
        is_str(m.id, "\xe8\xae\xbe\xe5\xa4\x87", "  \\u8bbe\\u5907 becomes UTF-8");
        is_str(m.url, "http://\xe4\xbe\x8b\xe5\xad\x90/\xe5\x9b\xba.swu", "  raw UTF-8 is kept");

        is_int(protocol_ota_receipt(m.id, true, NULL, &s), 0, "echo a UTF-8 ID");
        platform_message_clear(&m);
        is_int(parse(s, &m), 0, "  the receipt parses back");
        is_str(m.id, "\xe8\xae\xbe\xe5\xa4\x87", "  to the same ID");
        platform_message_clear(&m);
        free(s);

        is_int(parse("{\"CMD\":11,\"ID\":"
                     "\"\xf0\x9f\x98\x80\xe0\xa0\x80\xed\x9f\xbf\xf4\x8f\xbf\xbf\xc2\x80\"}",
                     &m),
               0, "raw UTF-8 at the edges of the valid ranges decodes");
        is_str(m.id, "\xf0\x9f\x98\x80\xe0\xa0\x80\xed\x9f\xbf\xf4\x8f\xbf\xbf\xc2\x80", "  unchanged");
        platform_message_clear(&m);

        is_int(parse("{\"CMD\":11,\"ID\":\"\\ud83d\\ude00\"}", &m), 0, "a surrogate pair decodes");
        is_str(m.id, "\xf0\x9f\x98\x80", "  to one 4-byte character");
        platform_message_clear(&m);
}

static void test_topics(void)
{
        static const struct {
                TopicKind kind;
                const char *topic;
        } table[] = {
                {TOPIC_OTA_POST, "/sys/P1/D1/thing/ota/post"},
                {TOPIC_OTA_SET, "/sys/P1/D1/thing/ota/set"},
                {TOPIC_REGISTER_POST, "/sys/P1/D1/thing/register/post"},
                {TOPIC_REGISTER_SET, "/sys/P1/D1/thing/register/set"},
        };
        static const char *const wrong[] = {
                "/sys/P2/D1/thing/ota/set",  "/sys/P1/D2/thing/ota/set",
                "/sys/P10/D1/thing/ota/set", "/sys/P1/D10/thing/ota/set",
                "/sys/P/D1/thing/ota/set",   "/sys/P1/D/thing/ota/set",
                "sys/P1/D1/thing/ota/set",   "//sys/P1/D1/thing/ota/set",
                "/sys/P1/D1/thing/ota/se",   "/sys/P1/D1/thing/ota/set/",
                "/sys/P1/D1/thing/ota/setx", "/sys/P1/D1/thing/ota/set/x",
                "/sys/P1/D1/thing/ota",      "/sys/P1/D1/thing/",
                "/sys/P1/D1/thing/OTA/set",  "/sys/P1/D1/things/ota/set",
                "/sys/D1/P1/thing/ota/set",  "/sys/P1/D1/thing/ota/get",
                "x/sys/P1/D1/thing/ota/set", "",
                "/sys/+/D1/thing/ota/set",
        };
        char *t = NULL;

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                is_int(protocol_topic(table[i].kind, "P1", "D1", &t), 0, "topic builds");
                is_str(t, table[i].topic, "  to the SPEC's name");
                is_int(protocol_topic_kind(t, "P1", "D1"), table[i].kind, "  and is recognized as its kind");
                free(t);
        }

        for (size_t i = 0; i < ELEMENTSOF(wrong); i++) {
                char name[128];

                snprintf(name, sizeof(name), "'%s' is not ours", wrong[i]);
                is_int(protocol_topic_kind(wrong[i], "P1", "D1"), -EINVAL, name);
        }

        is_int(protocol_topic_kind(NULL, "P1", "D1"), -EINVAL, "a NULL topic is none of ours");
        is_int(protocol_topic_kind("/sys/P1/D1/thing/ota/set", "", "D1"), -EINVAL,
               "an empty product ID matches nothing");
        is_int(protocol_topic_kind("/sys/P1/D1/thing/ota/set", "+", "D1"), -EINVAL,
               "a wildcard product ID matches nothing");

        t = NULL;
        is_int(protocol_topic(TOPIC_OTA_SET, "P/1", "D1", &t), -EINVAL, "a product ID with '/' is refused");
        is_int(protocol_topic(TOPIC_OTA_SET, "P1", "D+", &t), -EINVAL, "a device ID with '+' is refused");
        is_int(protocol_topic(TOPIC_OTA_SET, "P#", "D1", &t), -EINVAL, "a product ID with '#' is refused");
        is_int(protocol_topic(TOPIC_OTA_SET, "P1", "", &t), -EINVAL, "an empty device ID is refused");
        is_int(protocol_topic(_TOPIC_MAX, "P1", "D1", &t), -EINVAL, "an out-of-range kind is refused");
        is_int(protocol_topic(_TOPIC_INVALID, "P1", "D1", &t), -EINVAL, "_TOPIC_INVALID is refused");
        ok(t == NULL, "  and nothing was returned");

        is_int(protocol_topic(TOPIC_REGISTER_SET, "\xe4\xba\xa7\xe5\x93\x81", "dev-01.a_b", &t), 0,
               "IDs with UTF-8 and punctuation build");
        is_int(protocol_topic_kind(t, "\xe4\xba\xa7\xe5\x93\x81", "dev-01.a_b"), TOPIC_REGISTER_SET,
               "  and match");
        free(t);
}

static void test_versions(void)
{
        char v64[PROTOCOL_MAX_VERSION + 2];
        static const struct {
                const char *v;
                bool valid;
        } table[] = {
                {"", false},
                {"1.0.0", true},
                {"1.0+git~rc1", true},
                {"2.0.1-rc_3", true},
                {"a", true},
                {"/", false},
                {"1.0/2", false},
                {" ", false},
                {"1.0 ", false},
                {" 1.0", false},
                {"..", false},
                {".", false},
                {"../x", false},
                {"1.0\n", false},
                {"1;reboot", false},
                {"$(id)", false},
                {"1.0\xc3\xa9", false},
                {"v1..2", true},
                {"...", true},
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                char name[96];

                char shown[32];

                /* Keep the TAP line one line: show control characters as '?'. */
                snprintf(shown, sizeof(shown), "%s", table[i].v);
                for (char *c = shown; *c; c++)
                        if ((unsigned char)*c < 0x20)
                                *c = '?';
                snprintf(name, sizeof(name), "version '%s' is %s", shown,
                         table[i].valid ? "valid" : "invalid");
                is_int(version_is_valid(table[i].v), table[i].valid, name);
        }

        memset(v64, '9', sizeof(v64));
        v64[PROTOCOL_MAX_VERSION] = '\0';
        ok(version_is_valid(v64), "a version of 64 characters is valid");
        v64[PROTOCOL_MAX_VERSION] = '9';
        v64[PROTOCOL_MAX_VERSION + 1] = '\0';
        ok(!version_is_valid(v64), "a version of 65 characters is too long");
        ok(!version_is_valid(NULL), "NULL is not a version");
}

int main(void)
{
        test_encoders();
        test_spec_samples_decode();
        test_guide_samples();
        test_size_limits();
        test_not_objects();
        test_fields();
        test_unicode();
        test_topics();
        test_versions();
        return tap_done();
}
