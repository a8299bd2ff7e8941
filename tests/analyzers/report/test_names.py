"""names.py: kernel and operator names folded to a width, shortest-loss parts first."""

from __future__ import annotations

import pytest

from torchscope.analyzers.report.names import ELLIPSIS, fold_brackets, looks_like_symbol, short_name

# A real kernel name of the shared a100 traces' kind: return type, nested templates, a lambda, arguments.
KERNEL = ("void at::native::elementwise_kernel<128, 2, at::native::gpu_kernel_impl_nocast<at::native::"
          "(anonymous namespace)::direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() "
          "const::{lambda(float)#1}>(at::TensorIteratorBase&, at::native::(anonymous namespace)::"
          "direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda(float)#1} "
          "const&)::{lambda(int)#1}>(int, at::native::gpu_kernel_impl_nocast<at::native::(anonymous namespace)::"
          "direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda(float)#1}>"
          "(at::TensorIteratorBase&, at::native::(anonymous namespace)::direct_copy_kernel_cuda("
          "at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda(float)#1} const&)::{lambda(int)#1})")


def test_a_name_that_fits_is_unchanged():
    assert short_name("aten::mm", 40) == "aten::mm"
    assert short_name("void f<int>(float*)", 40) == "void f<int>(float*)"


@pytest.mark.parametrize("width,expected", [
    (60, "at::native::elementwise_kernel<…>(…)"),
    (30, "elementwise_kernel<…>(…)"),
])
def test_templates_then_arguments_then_namespaces_fold(width, expected):
    assert len(KERNEL) > 600
    assert short_name(KERNEL, width) == expected


def test_the_tail_is_cut_last_and_the_width_always_holds():
    name = "sm80_xmma_fprop_implicit_gemm_indexed_tf32f32_tf32f32_f32_nhwckrsc_nchw_tilesize128x128x16"
    assert short_name(name, 40) == name[:39] + ELLIPSIS
    for width in (8, 12, 20, 33, 47, 70, 99):
        assert len(short_name(KERNEL, width)) <= width
        assert len(short_name(name, width)) <= width


def test_brackets_fold_outermost_and_unbalanced_names_stay():
    assert fold_brackets("a<b<c>, d>::e<f>", "<", ">") == "a<…>::e<…>"
    assert fold_brackets("f()", "(", ")") == "f()"
    assert fold_brackets("a < b", "<", ">") == "a < b"


def test_prose_is_not_a_symbol():
    assert looks_like_symbol(KERNEL) and looks_like_symbol("aten::add_")
    assert looks_like_symbol("Memcpy HtoD (Pageable -> Device)") is False
    assert not looks_like_symbol("measured on the host by the profiler")
