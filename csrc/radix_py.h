/* radix_py.h -- the point reads as plain CPython functions, beside the cffi ones.
 *
 * Included by radix.h only when Python.h came first, that is in the cffi extension
 * module (pykvs._cradix); the C tests never see it.
 *
 * Why: through cffi a Tree.get costs about 5,100 instructions of which the lookup
 * is 300. The rest is cffi's generic machinery: releasing and taking back the GIL
 * (~700), converting the arguments (~600), a cdata for the returned leaf, two
 * field reads on it (~750) and ffi.unpack's keyword parsing (~600). These
 * functions take the root's address as an int and the key as bytes, look the key
 * up holding the GIL (shorter than releasing it) and build the answer directly.
 *
 * radix_py_install() puts them in a module object `pykvs._cradix_fast`
 * (sys.modules), as `get(root_address, key)` and `get_with_index(root_address,
 * key)`. A key that is not exactly bytes raises TypeError: pykvs/radix.py then
 * takes its checked path, which names the argument. The caller keeps the version
 * alive for the call (a Tree holds it).
 */
#ifndef PYKVS_RADIX_PY_H
#define PYKVS_RADIX_PY_H

static const radix_leaf *radix_py_lookup(PyObject *args, const char *name)
{
    PyObject *addr, *key;
    if (!PyArg_UnpackTuple(args, name, 2, 2, &addr, &key))
        return NULL;
    const radix_node *root = PyLong_AsVoidPtr(addr);
    if (!root) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "root address is NULL");
        return NULL;
    }
    char *k;
    Py_ssize_t klen;
    if (!PyBytes_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "key must be bytes");
        return NULL;
    }
    if (PyBytes_AsStringAndSize(key, &k, &klen) < 0)
        return NULL;
    return radix_get(root, k, (size_t)klen);
}

/* A missing key: NULL with no error set. */
static PyObject *radix_py_get(PyObject *self, PyObject *args)
{
    (void)self;
    const radix_leaf *l = radix_py_lookup(args, "get");
    if (l)
        return PyBytes_FromStringAndSize(l->data, (Py_ssize_t)l->vlen);
    if (PyErr_Occurred())
        return NULL;
    Py_INCREF(Py_None);
    return Py_None;
}

static PyObject *radix_py_get_with_index(PyObject *self, PyObject *args)
{
    (void)self;
    const radix_leaf *l = radix_py_lookup(args, "get_with_index");
    if (l) {
        PyObject *pair = PyTuple_New(2);
        PyObject *value = PyBytes_FromStringAndSize(l->data, (Py_ssize_t)l->vlen);
        PyObject *index = PyLong_FromUnsignedLongLong((unsigned long long)l->index);
        if (pair && value && index) {
            PyTuple_SetItem(pair, 0, value); /* steals the references */
            PyTuple_SetItem(pair, 1, index);
            return pair;
        }
        Py_XDECREF(pair);
        Py_XDECREF(value);
        Py_XDECREF(index);
        return NULL;
    }
    if (PyErr_Occurred())
        return NULL;
    Py_INCREF(Py_None);
    return Py_None;
}

/* Called through cffi (without the GIL): 0 when installed, -1 on failure. */
static int radix_py_install(void)
{
    static PyMethodDef defs[] = {
        {"get", radix_py_get, METH_VARARGS, "get(root_address, key) -> bytes | None"},
        {"get_with_index", radix_py_get_with_index, METH_VARARGS,
         "get_with_index(root_address, key) -> (bytes, int) | None"},
    };
    PyGILState_STATE gil = PyGILState_Ensure();
    int r = 0;
    PyObject *module = PyImport_AddModule("pykvs._cradix_fast"); /* borrowed */
    for (size_t i = 0; module && r == 0 && i < sizeof defs / sizeof defs[0]; i++) {
        PyObject *fn = PyCFunction_NewEx(&defs[i], NULL, NULL);
        r = fn ? PyObject_SetAttrString(module, defs[i].ml_name, fn) : -1;
        Py_XDECREF(fn);
    }
    if (!module || r < 0) {
        PyErr_Clear();
        r = -1;
    }
    PyGILState_Release(gil);
    return r;
}

#endif
