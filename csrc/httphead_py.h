/* httphead_py.h -- httphead_parse as a plain CPython function, beside the cffi ones.
 *
 * Included by httphead.h only when Python.h came first, that is in the cffi extension module
 * (pykvs._cradix); the C tests never see it. The front calls it once per request, so it
 * builds the answer directly instead of paying cffi's call and struct-reading machinery
 * (csrc/radix_py.h measures what that costs).
 *
 * httphead_py_install() puts `parse_head(buffer, max_head)` in the module object
 * `pykvs._cradix_fast` (sys.modules). buffer: a bytearray (the front's) or bytes; nothing
 * runs while it is read, so it cannot change meanwhile. Returns None (HTTPHEAD_INCOMPLETE), False (HTTPHEAD_OTHER) or, for a
 * fast shape, the tuple
 *     (method, key, query or None, content_length, token or None, authorization or None,
 *      close, body_offset)
 * with str parts (the grammar admits ASCII only) and int/bool numbers.
 */
#ifndef PYKVS_HTTPHEAD_PY_H
#define PYKVS_HTTPHEAD_PY_H

static PyObject *httphead_py_methods[3];

static PyObject *httphead_py_span(const uint8_t *buf, httphead_span span)
{
    if (!span.present)
        Py_RETURN_NONE;
    return PyUnicode_DecodeASCII((const char *)buf + span.off, (Py_ssize_t)span.len, "strict");
}

static PyObject *httphead_py_parse(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *source;
    Py_ssize_t max_head;
    if (!PyArg_ParseTuple(args, "On:parse_head", &source, &max_head))
        return NULL;
    if (max_head < 0) {
        PyErr_SetString(PyExc_ValueError, "parse_head: max_head must be >= 0");
        return NULL;
    }
    /* The module is built for the limited API, where Py_buffer is not available. */
    const uint8_t *buf;
    Py_ssize_t len;
    if (PyByteArray_Check(source)) {
        buf = (const uint8_t *)PyByteArray_AsString(source);
        len = PyByteArray_Size(source);
    } else if (PyBytes_Check(source)) {
        buf = (const uint8_t *)PyBytes_AsString(source);
        len = PyBytes_Size(source);
    } else {
        PyErr_SetString(PyExc_TypeError, "parse_head: buffer must be bytearray or bytes");
        return NULL;
    }
    httphead h;
    int status = httphead_parse(buf, (size_t)len, (size_t)max_head, &h);
    PyObject *result = NULL;
    if (status == HTTPHEAD_INCOMPLETE) {
        result = Py_NewRef(Py_None);
    } else if (status != HTTPHEAD_FAST) {
        result = Py_NewRef(Py_False);
    } else {
        result = Py_BuildValue(
            "(ONNKNNOn)", httphead_py_methods[h.method], httphead_py_span(buf, h.key),
            httphead_py_span(buf, h.query), (unsigned long long)h.content_length,
            httphead_py_span(buf, h.token), httphead_py_span(buf, h.authorization),
            h.close ? Py_True : Py_False, (Py_ssize_t)h.body_offset);
    }
    return result;
}

/* Called through cffi (without the GIL): 0 when installed, -1 on failure. */
static int httphead_py_install(void)
{
    static PyMethodDef def = {
        "parse_head", httphead_py_parse, METH_VARARGS,
        "parse_head(buffer, max_head) -> None | False | (method, key, query, content_length, "
        "token, authorization, close, body_offset)"};
    static const char *names[3] = {"GET", "PUT", "DELETE"};
    PyGILState_STATE gil = PyGILState_Ensure();
    int r = 0;
    for (int i = 0; i < 3 && r == 0; i++) {
        if (!httphead_py_methods[i])
            httphead_py_methods[i] = PyUnicode_InternFromString(names[i]);
        if (!httphead_py_methods[i])
            r = -1;
    }
    PyObject *module = r == 0 ? PyImport_AddModule("pykvs._cradix_fast") : NULL; /* borrowed */
    PyObject *fn = module ? PyCFunction_NewEx(&def, NULL, NULL) : NULL;
    r = fn ? PyObject_SetAttrString(module, def.ml_name, fn) : -1;
    Py_XDECREF(fn);
    if (r < 0)
        PyErr_Clear();
    PyGILState_Release(gil);
    return r;
}

#endif
