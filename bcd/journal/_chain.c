/* The seals' hashing (bcd.journal.ledger.python_seal_hashes) compiled: the same hashes, byte for byte, in about
 * half the CPU time. Why by hand: no library chains SHA-256 over canonical JSON, and in Python the entry's text
 * and its hash cost 1.7-1.8 us an event, most of the 5 % the issue allows the chain (README, "The journal's hash
 * chain"). Optional: where it is not built, or for a row it does not handle exactly as Python would (returns
 * None), the caller uses the Python function. tests/unit/journal/test_chain_compiled.py checks both agree.
 *
 * seal_hashes(prev, rows): rows are (id, at, kind, service, site, reason, data, seq) tuples; each entry's text is
 * {"at":…,"body":{"at":…,"data":…,"id":…,"kind":…,"reason":…,"service":…,"site":…},"kind":"events",
 * "ref":"<id>","seq":…} and its hash the hex SHA-256 of prev "\n" text, prev being the hash before it. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <openssl/evp.h>

static EVP_MD *sha256;
static const char HEX[] = "0123456789abcdef";

typedef struct {
    char *bytes;
    Py_ssize_t length, size;
} Text;

static int reserve(Text *text, Py_ssize_t more)
{
    if (text->length + more <= text->size)
        return 0;
    Py_ssize_t size = text->size ? text->size : 1024;
    while (size < text->length + more)
        size *= 2;
    char *bytes = PyMem_Realloc(text->bytes, size);
    if (bytes == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    text->bytes = bytes;
    text->size = size;
    return 0;
}

static int add(Text *text, const char *bytes, Py_ssize_t length)
{
    if (reserve(text, length) < 0)
        return -1;
    memcpy(text->bytes + text->length, bytes, length);
    text->length += length;
    return 0;
}

#define ADD(text, literal) add(text, literal, sizeof(literal) - 1)

/* Bytes json.encoder.encode_basestring escapes: the controls, '"' and '\\' (UTF-8's other bytes go as they are). */
static unsigned char ESCAPED[256];

/* Append `length` bytes of UTF-8 as a JSON string's content, escaped as encode_basestring escapes them: runs of
 * bytes that need nothing are copied whole. */
static int add_escaped(Text *text, const unsigned char *utf8, Py_ssize_t length)
{
    if (reserve(text, length * 6 + 2) < 0)
        return -1;
    char *out = text->bytes + text->length;
    *out++ = '"';
    Py_ssize_t i = 0;
    while (i < length) {
        Py_ssize_t run = i;
        while (run < length && !ESCAPED[utf8[run]])
            run++;
        memcpy(out, utf8 + i, run - i);
        out += run - i;
        if (run == length)
            break;
        unsigned char c = utf8[run];
        i = run + 1;
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\n': *out++ = 'n'; break;
        case '\r': *out++ = 'r'; break;
        case '\t': *out++ = 't'; break;
        case '\b': *out++ = 'b'; break;
        case '\f': *out++ = 'f'; break;
        default:
            *out++ = 'u';
            *out++ = '0';
            *out++ = '0';
            *out++ = HEX[c >> 4];
            *out++ = HEX[c & 15];
        }
    }
    *out++ = '"';
    text->length = out - text->bytes;
    return 0;
}

/* What json.encoder.encode_basestring writes (ensure_ascii=False), as UTF-8; `nullable`: None writes null.
 * 1: not a value Python would write this way (the caller falls back to Python). An ASCII string is read in place;
 * another is encoded into a bytes object dropped after (PyUnicode_AsUTF8AndSize would keep a UTF-8 copy inside
 * the string for as long as it lives). */
static int add_string(Text *text, PyObject *value, int nullable)
{
    if (value == Py_None && nullable)
        return ADD(text, "null");
    if (!PyUnicode_CheckExact(value))
        return 1;
    if (PyUnicode_READY(value) < 0)
        return -1;
    if (PyUnicode_IS_ASCII(value))
        return add_escaped(text, PyUnicode_DATA(value), PyUnicode_GET_LENGTH(value));
    PyObject *utf8 = PyUnicode_AsUTF8String(value);
    if (utf8 == NULL) {  /* a lone surrogate: Python raises, through its own path */
        PyErr_Clear();
        return 1;
    }
    int result = add_escaped(text, (const unsigned char *)PyBytes_AS_STRING(utf8), PyBytes_GET_SIZE(utf8));
    Py_DECREF(utf8);
    return result;
}

/* An int as str() writes it. 1: not an int that fits a long long. */
static int add_int(Text *text, PyObject *value)
{
    if (!PyLong_CheckExact(value))
        return 1;
    int overflow;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (number == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 1;
    }
    char digits[24];
    int at = sizeof(digits);
    unsigned long long left = number < 0 ? 0ULL - (unsigned long long)number : (unsigned long long)number;
    do {
        digits[--at] = (char)('0' + left % 10);
        left /= 10;
    } while (left);
    if (number < 0)
        digits[--at] = '-';
    return add(text, digits + at, sizeof(digits) - at);
}

/* A number as the entry's canonical JSON writes it: a finite float as repr(), an int as str(). */
static int add_number(Text *text, PyObject *value)
{
    if (!PyFloat_CheckExact(value))
        return add_int(text, value);
    double number = PyFloat_AS_DOUBLE(value);
    if (!isfinite(number))
        return 1;
    char *written = PyOS_double_to_string(number, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (written == NULL)
        return -1;
    int result = add(text, written, (Py_ssize_t)strlen(written));
    PyMem_Free(written);
    return result;
}

/* prev "\n" and the entry's text of one row. */
static int entry(Text *text, const char *prev, PyObject *row)
{
    if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != 8)
        return 1;
    PyObject *id = PyTuple_GET_ITEM(row, 0);
    int result;
    text->length = 0;
    if ((result = add(text, prev, 64)) || (result = ADD(text, "\n{\"at\":")))
        return result;
    Py_ssize_t at = text->length;
    if ((result = add_number(text, PyTuple_GET_ITEM(row, 1))))
        return result;
    Py_ssize_t at_length = text->length - at;
    if ((result = ADD(text, ",\"body\":{\"at\":")) || (result = reserve(text, at_length)))
        return result;
    memcpy(text->bytes + text->length, text->bytes + at, at_length);
    text->length += at_length;
    if ((result = ADD(text, ",\"data\":")) || (result = add_string(text, PyTuple_GET_ITEM(row, 6), 0))
        || (result = ADD(text, ",\"id\":")) || (result = add_int(text, id))
        || (result = ADD(text, ",\"kind\":")) || (result = add_string(text, PyTuple_GET_ITEM(row, 2), 0))
        || (result = ADD(text, ",\"reason\":")) || (result = add_string(text, PyTuple_GET_ITEM(row, 5), 0))
        || (result = ADD(text, ",\"service\":")) || (result = add_string(text, PyTuple_GET_ITEM(row, 3), 1))
        || (result = ADD(text, ",\"site\":")) || (result = add_string(text, PyTuple_GET_ITEM(row, 4), 1))
        || (result = ADD(text, "},\"kind\":\"events\",\"ref\":\"")) || (result = add_int(text, id))
        || (result = ADD(text, "\",\"seq\":")) || (result = add_int(text, PyTuple_GET_ITEM(row, 7))))
        return result;
    return ADD(text, "}");
}

static PyObject *seal_hashes(PyObject *module, PyObject *args)
{
    PyObject *prev_value, *rows;
    if (!PyArg_ParseTuple(args, "UO!:seal_hashes", &prev_value, &PyList_Type, &rows))
        return NULL;
    Py_ssize_t prev_length;
    const char *prev_utf8 = PyUnicode_AsUTF8AndSize(prev_value, &prev_length);
    if (prev_utf8 == NULL)
        return NULL;
    if (prev_length != 64)
        Py_RETURN_NONE;
    char prev[64];
    memcpy(prev, prev_utf8, 64);
    Py_ssize_t count = PyList_GET_SIZE(rows);
    PyObject *hashes = PyList_New(count);
    EVP_MD_CTX *context = EVP_MD_CTX_new();
    Text text = {NULL, 0, 0};
    int result = hashes == NULL || context == NULL ? -1 : 0;
    for (Py_ssize_t i = 0; i < count && result == 0; i++) {
        if ((result = entry(&text, prev, PyList_GET_ITEM(rows, i))))
            break;
        unsigned char digest[32];
        if (!EVP_DigestInit_ex2(context, sha256, NULL) || !EVP_DigestUpdate(context, text.bytes, text.length)
            || !EVP_DigestFinal_ex(context, digest, NULL)) {
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL's SHA-256 failed");
            result = -1;
            break;
        }
        for (int k = 0; k < 32; k++) {
            prev[2 * k] = HEX[digest[k] >> 4];
            prev[2 * k + 1] = HEX[digest[k] & 15];
        }
        PyObject *hash = PyUnicode_FromStringAndSize(prev, 64);
        if (hash == NULL)
            result = -1;
        else
            PyList_SET_ITEM(hashes, i, hash);
    }
    PyMem_Free(text.bytes);
    EVP_MD_CTX_free(context);
    if (result != 0) {
        Py_XDECREF(hashes);
        if (result < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    return hashes;
}

static PyMethodDef methods[] = {
    {"seal_hashes", seal_hashes, METH_VARARGS,
     "seal_hashes(prev, rows) -> list[str] | None: bcd.journal.ledger.python_seal_hashes compiled; None for rows "
     "it does not write exactly as Python would (use the Python function then)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "bcd.journal._chain", NULL, -1, methods};

PyMODINIT_FUNC PyInit__chain(void)
{
    for (int c = 0; c < 0x20; c++)
        ESCAPED[c] = 1;
    ESCAPED['"'] = ESCAPED['\\'] = 1;
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (sha256 == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256");
        return NULL;
    }
    return PyModule_Create(&module);
}
